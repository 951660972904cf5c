// Package stacks finds goroutines by their stacks. Tests use it to order
// goroutines by what they are parked on, never by time: a test waits until
// the goroutine it started is parked where it must be, then acts. It is for
// waits that nothing of ours counts: a sync.WaitGroup's Wait, a goroutine on
// its way out. A wait for a lock of the library is read from the lock itself
// (internal/waitmu), which names the lock, not a function that may be
// renamed or inlined.
package stacks

import (
	"runtime"
	"strings"
)

// Parked reports whether some goroutine's stack, header included (which
// says what the goroutine waits for, such as "[sync.Mutex.Lock"), contains
// every string of with and none of without.
func Parked(with, without []string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if matches(g, with, without) {
			return true
		}
	}
	return false
}

func matches(g string, with, without []string) bool {
	for _, s := range with {
		if !strings.Contains(g, s) {
			return false
		}
	}
	for _, s := range without {
		if strings.Contains(g, s) {
			return false
		}
	}
	return true
}
