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

// LiveKeepingPools returns the live heap after one collection: what
// sync.Pool keeps stays in it, as its victims, as it does in a process whose
// pools are in use between every two collections.
func LiveKeepingPools() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// RequireBackTo fails t if the live heap (Live) is more than slack bytes
// above base, a Live of before the burst that the caller has ended since.
func RequireBackTo(t testing.TB, base, slack uint64) {
	t.Helper()
	requireBelow(t, Live(), base, slack)
}

// RequireBackToKeepingPools is RequireBackTo with LiveKeepingPools.
func RequireBackToKeepingPools(t testing.TB, base, slack uint64) {
	t.Helper()
	requireBelow(t, LiveKeepingPools(), base, slack)
}

func requireBelow(t testing.TB, after, base, slack uint64) {
	t.Helper()
	t.Logf("live heap after the burst: %+d KB", (int64(after)-int64(base))/1024)
	if after > base+slack {
		t.Fatalf("the live heap is %d KB above its size before the burst, which has ended; want at most %d KB",
			(after-base)>>10, slack>>10)
	}
}
