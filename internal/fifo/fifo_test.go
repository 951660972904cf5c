package fifo

import "testing"

func TestQueue_KeepsOrderAcrossCompaction(t *testing.T) {
	var q Queue[int]
	next, want := 0, 0
	// Interleave pushes and pops so that the head advances and Push compacts.
	for round := 0; round < 50; round++ {
		for i := 0; i < round%7+1; i++ {
			q.Push(next)
			next++
		}
		for i := 0; i < round%5; i++ {
			v, ok := q.Pop()
			if !ok {
				break
			}
			if v != want {
				t.Fatalf("popped %d, want %d", v, want)
			}
			want++
		}
	}
	for q.Len() > 0 {
		v, _ := q.Pop()
		if v != want {
			t.Fatalf("popped %d, want %d", v, want)
		}
		want++
	}
	if want != next {
		t.Fatalf("popped %d items, pushed %d", want, next)
	}
	if _, ok := q.Pop(); ok {
		t.Fatal("Pop on empty queue reported ok")
	}
	if _, ok := q.Peek(); ok {
		t.Fatal("Peek on empty queue reported ok")
	}
	q.Push(7)
	if v, ok := q.Peek(); !ok || v != 7 || q.Len() != 1 {
		t.Fatalf("Peek = %d, %v with Len %d; want 7, true, 1", v, ok, q.Len())
	}
}

func TestQueue_Reset(t *testing.T) {
	var q Queue[string]
	q.Push("a")
	q.Push("b")
	q.Reset()
	if q.Len() != 0 {
		t.Fatalf("Len after Reset = %d", q.Len())
	}
	q.Push("c")
	if v, _ := q.Pop(); v != "c" {
		t.Fatalf("got %q after Reset, want c", v)
	}
}

// TestQueue_EmptiedKeepsNoBurstStorage: a queue that grew for a burst and then
// emptied lets go of that storage, and keeps a small one for reuse. A
// subscription's backlog is such a queue: one that fell far behind once kept
// its array, sized for the burst, for its whole life (found by review).
func TestQueue_EmptiedKeepsNoBurstStorage(t *testing.T) {
	for _, pushed := range []int{10, keepCap / 2, 100 * keepCap} {
		var q Queue[[64]byte]
		for range pushed {
			q.Push([64]byte{})
		}
		grown := cap(q.buf)
		for q.Len() > 0 {
			q.Pop()
		}
		want := grown // kept for reuse
		if grown > keepCap {
			want = 0 // a burst's: let go
		}
		if c := cap(q.buf); c != want {
			t.Errorf("after %d items (storage for %d), the empty queue keeps storage for %d, want %d", pushed, grown, c, want)
		}
		q.Push([64]byte{1}) // usable after either
		if v, ok := q.Pop(); !ok || v[0] != 1 {
			t.Errorf("after %d items, the emptied queue does not work: %v %v", pushed, v[0], ok)
		}
	}
}
