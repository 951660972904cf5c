package waitmu

import (
	"sync"
	"testing"
)

// BenchmarkLock is an uncontended Lock and Unlock, of a Mutex and of the
// sync.Mutex it wraps.
func BenchmarkLock(b *testing.B) {
	b.Run("impl=sync", func(b *testing.B) {
		var m sync.Mutex
		for b.Loop() {
			m.Lock()
			m.Unlock() //nolint:staticcheck // an empty critical section is what is measured
		}
	})
	b.Run("impl=waitmu", func(b *testing.B) {
		var m Mutex
		for b.Loop() {
			m.Lock()
			m.Unlock() //nolint:staticcheck // as above
		}
	})
}
