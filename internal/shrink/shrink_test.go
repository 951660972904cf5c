package shrink

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/bitswapsync/notifier/internal/heaptest"
)

func fill(m map[string]int, p *Peak, keys []string) {
	for i, k := range keys {
		m[k] = i
		p.Grew(len(m))
	}
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%032d", i)
	}
	return keys
}

// After a burst the map keeps what is left, in storage of its size.
func TestFit_EmptiedMapGivesBackItsStorage(t *testing.T) {
	keys := testKeys(100_000)
	var p Peak
	m := map[string]int{}
	fill(m, &p, keys)
	full := heaptest.Live()
	for _, k := range keys[10:] {
		delete(m, k)
		m = Fit(m, &p)
	}
	left := heaptest.Live()
	// A map of 100,000 strings to ints takes about 3.4 MB here, and keeps
	// all of it after the deletions without Fit.
	if int64(full)-int64(left) < 2<<20 { // signed: without Fit, left may be a little above full
		t.Fatalf("the map gave back %d bytes of its storage, want over 2 MB", int64(full)-int64(left))
	}
	if len(m) != 10 {
		t.Fatalf("%d keys left, want 10", len(m))
	}
	for i, k := range keys[:10] {
		if v, ok := m[k]; !ok || v != i {
			t.Fatalf("m[%q] = %d, %v after the copy; want %d, true", k, v, ok, i)
		}
	}
	runtime.KeepAlive(m)
}

// A map copies itself only at an eighth of its peak, and not at or under
// Floor; the copy resets the peak.
func TestFit_CopiesOnlyAtAnEighthOfAPeakAboveFloor(t *testing.T) {
	for _, peak := range []int{Floor, Floor + 8, 8 * Floor} {
		t.Run(fmt.Sprint(peak), func(t *testing.T) {
			keys := testKeys(peak)
			var p Peak
			m := map[string]int{}
			fill(m, &p, keys)
			copied := -1
			for i, k := range keys {
				delete(m, k)
				before := m
				m = Fit(m, &p)
				if fmt.Sprintf("%p", before) != fmt.Sprintf("%p", m) {
					if copied >= 0 {
						t.Fatalf("copied at %d keys and again at %d", peak-copied-1, len(m))
					}
					copied = i
					if p.n != len(m) {
						t.Fatalf("peak %d after the copy, want %d", p.n, len(m))
					}
				}
			}
			switch {
			case peak <= Floor && copied >= 0:
				t.Fatalf("a map of peak %d was copied at %d keys", peak, peak-copied-1)
			case peak > Floor && copied < 0:
				t.Fatalf("a map of peak %d was never copied", peak)
			case peak > Floor && peak-copied-1 != peak/8:
				t.Fatalf("a map of peak %d was copied at %d keys, want %d", peak, peak-copied-1, peak/8)
			}
		})
	}
}

// A nil map, and an empty one, stay usable.
func TestFit_EmptyAndNilMaps(t *testing.T) {
	var p Peak
	var m map[string]int
	if got := Fit(m, &p); got != nil {
		t.Fatalf("Fit(nil) = %v, want nil", got)
	}
	m = map[string]int{}
	fill(m, &p, testKeys(2*Floor))
	clear(m)
	m = Fit(m, &p)
	if m == nil || len(m) != 0 {
		t.Fatalf("Fit of an emptied map = %v, want an empty map", m)
	}
	m["x"] = 1 // writable
}

// A slice is copied only at an eighth of a capacity above Floor, into
// storage of about its length.
func TestClip(t *testing.T) {
	for _, c := range []struct {
		cap, len int
		copied   bool
	}{
		{Floor, 0, false},
		{Floor + 8, (Floor + 8) / 8, true},
		{Floor + 8, (Floor+8)/8 + 1, false},
		{8 * Floor, 0, true},
	} {
		s := make([]int, c.len, c.cap)
		for i := range s {
			s[i] = i
		}
		got := Clip(s)
		if copied := cap(got) != c.cap; copied != c.copied || len(got) != c.len || (copied && cap(got) > 2*c.len) {
			t.Errorf("Clip of len %d cap %d: len %d cap %d; want a copy: %v", c.len, c.cap, len(got), cap(got), c.copied)
		}
		for i, v := range got {
			if v != i {
				t.Fatalf("Clip of len %d cap %d: [%d] = %d", c.len, c.cap, i, v)
			}
		}
	}
}
