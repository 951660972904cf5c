// Package heaptest measures the live heap for tests that check that memory
// is given back.
package heaptest

import (
	"runtime"
	"testing"
)

// Live returns the live heap once the collector has run twice: twice, so
// that sync.Pool's victims of the first collection are gone too.
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// RequireBackTo fails t if the live heap is more than slack bytes above base,
// a Live of before the burst that the caller has ended since.
func RequireBackTo(t testing.TB, base, slack uint64) {
	t.Helper()
	after := Live()
	t.Logf("live heap after the burst: %+d KB", (int64(after)-int64(base))/1024)
	if after > base+slack {
		t.Fatalf("the live heap is %d KB above its size before the burst, which has ended; want at most %d KB",
			(after-base)>>10, slack>>10)
	}
}
