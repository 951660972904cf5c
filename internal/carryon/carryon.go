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

// Drain is Each over a queue that grows while it runs: it removes the first
// item of *q and calls f on it until *q is empty, and f may append to *q.
// If f panics or exits the goroutine on an item, Drain still drains the
// rest, the items f appended before that included, before the panic goes
// on, unrecovered.
func Drain[T any](q *[]T, f func(T)) {
	finished := false
	defer func() {
		if !finished {
			Drain(q, f)
		}
	}()
	for len(*q) > 0 {
		x := (*q)[0]
		*q = (*q)[1:] // before f: if f panics, the deferred call goes on after x
		f(x)
	}
	finished = true
}
