package waitmu

import "testing"

func TestWaiting_CountsTheGoroutinesParkedInLock(t *testing.T) {
	var m, other Mutex
	if got := Waiting(&m); got != 0 {
		t.Fatalf("Waiting before Count = %d, want 0", got)
	}
	Count()
	m.Lock()
	if m.TryLock() {
		t.Fatal("TryLock took a locked Mutex")
	}
	done := make(chan struct{})
	for range 2 {
		go func() {
			m.Lock()
			m.Unlock() //nolint:staticcheck // an empty critical section: the goroutine only waits
			done <- struct{}{}
		}()
	}
	Await(t, &m, 2)
	if got := Waiting(&other); got != 0 {
		t.Fatalf("Waiting(other) = %d, want 0: the waiters wait for m", got)
	}
	m.Unlock()
	<-done
	<-done
	if got := Waiting(&m); got != 0 {
		t.Fatalf("Waiting after both took m = %d, want 0", got)
	}
	if !m.TryLock() {
		t.Fatal("TryLock failed on a free Mutex")
	}
	m.Unlock()
}
