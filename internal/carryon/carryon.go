// Package carryon runs a function on every item of a list even when it
// panics on some of them: the Notifier's Close and bitswapcompat's Shutdown
// end every subscription or call this way, since a cancel function of the
// user may panic in any of those ends, and both run once (sync.Once), so no
// later call would end the rest.
package carryon

// Each calls f on each item of items, in order, and then after. If f panics
// or exits the goroutine (runtime.Goexit) on an item, Each still calls f on
// the items after it, and after, before the panic goes on, unrecovered. A
// panic in after is not carried on: after runs once.
func Each[T any](items []T, f func(T), after func()) {
	finished := false
	defer func() {
		if !finished {
			Each(items, f, after)
		}
	}()
	for len(items) > 0 {
		x := items[0]
		items = items[1:] // before f: if f panics, the deferred call goes on after x
		f(x)
	}
	finished = true
	after()
}
