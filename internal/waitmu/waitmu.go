// Package waitmu is a sync.Mutex whose waiters a test can see. Tests order
// goroutines by what they wait for, never by time: a test holds a lock, starts
// the operation that must wait for it, waits until that operation is a waiter
// of the lock (Waiting, Await), then acts. Before this package they learnt it by
// parsing runtime.Stack for a function name, which broke whenever a function
// was renamed or inlined and could not tell one lock from another.
//
// Counting is off unless a test binary turns it on (Count). Off, a Mutex
// costs what a sync.Mutex costs plus a call (Lock is not inlined, where
// sync.Mutex's fast path is; about a nanosecond, BenchmarkLock): Lock tries
// the lock first, and only a goroutine that would park looks for the
// counter.
package waitmu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Mutex is a sync.Mutex. The zero value is an unlocked mutex. A Mutex must not
// be copied after first use.
type Mutex struct {
	mu sync.Mutex
}

// Lock locks m, waiting until it is free.
func (m *Mutex) Lock() {
	if !m.mu.TryLock() {
		m.lockSlow()
	}
}

func (m *Mutex) lockSlow() {
	c := counter.Load()
	if c == nil {
		m.mu.Lock()
		return
	}
	c.add(m, 1)
	m.mu.Lock()
	c.add(m, -1)
}

// TryLock locks m if it is free and reports whether it did.
func (m *Mutex) TryLock() bool { return m.mu.TryLock() }

// Unlock unlocks m. As with sync.Mutex, unlocking a Mutex that is not locked
// is a fatal error.
func (m *Mutex) Unlock() { m.mu.Unlock() }

// Waiting returns how many goroutines wait in m.Lock now. It counts only
// goroutines that began to wait after Count; without Count it is always 0.
// A goroutine is counted from just before it parks until just after it has
// the lock, so a count of one means that the goroutine has done everything it
// does before this Lock and nothing after it.
func Waiting(m *Mutex) int {
	c := counter.Load()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[m]
}

// Count turns counting on for the rest of the process; it is for tests. Call
// it before the goroutines whose waits a test will read start.
func Count() {
	counter.CompareAndSwap(nil, &waits{n: make(map[*Mutex]int)})
}

var counter atomic.Pointer[waits]

// waits is the number of waiters of each Mutex that has some.
type waits struct {
	mu sync.Mutex
	n  map[*Mutex]int
}

func (c *waits) add(m *Mutex, d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[m] += d; c.n[m] == 0 {
		delete(c.n, m)
	}
}

// TB is the part of testing.TB that Await uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Await waits until want goroutines wait for m (Waiting): the operation that
// a test started, while it holds m, has done everything it does before it
// locks m. It fails the test after 10 s, or after 2^25 rounds of
// runtime.Gosched (5-25 s on CI's machine when nothing else is runnable): in
// a synctest bubble the clock stands still while the caller runs, so only
// the count ends the wait there. Count must have been called.
func Await(t TB, m *Mutex, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; Waiting(m) < want; i++ {
		if i == 1<<25 || time.Now().After(deadline) {
			t.Fatalf("%d goroutines wait for the lock, want %d", Waiting(m), want)
		}
		runtime.Gosched()
	}
}
