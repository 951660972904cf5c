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
		c := cap(q.buf)
		switch {
		case grown <= keepCap && c != grown:
			t.Errorf("after %d items (storage for %d), the empty queue keeps storage for %d, not its own for reuse", pushed, grown, c)
		case grown > keepCap && c > keepCap:
			t.Errorf("after %d items (storage for %d), the empty queue keeps storage for %d, more than %d", pushed, grown, c, keepCap)
		}
		q.Push([64]byte{1}) // usable after either
		if v, ok := q.Pop(); !ok || v[0] != 1 {
			t.Errorf("after %d items, the emptied queue does not work: %v %v", pushed, v[0], ok)
		}
	}
}

// TestQueue_BehindKeepsNoBurstStorage: a queue that grew for a burst and then
// stays a few items long, never empty, shrinks its storage too, and keeps its
// order (found by review: it kept the burst's array for its whole life).
func TestQueue_BehindKeepsNoBurstStorage(t *testing.T) {
	var q Queue[int]
	next, want := 0, 0
	for range 100 * keepCap {
		q.Push(next)
		next++
	}
	pop := func() {
		v, ok := q.Pop()
		if !ok || v != want {
			t.Fatalf("popped %d, %v; want %d", v, ok, want)
		}
		want++
	}
	for q.Len() > 3 {
		pop()
	}
	for range 10 * keepCap { // one in, one out: never empty
		q.Push(next)
		next++
		pop()
	}
	if c := cap(q.buf); c > keepCap {
		t.Errorf("a queue of %d items keeps storage for %d", q.Len(), c)
	}
	for q.Len() > 0 {
		pop()
	}
	if want != next {
		t.Errorf("popped %d items of %d", want, next)
	}
}

// TestQueue_HoldsOnlyWhatIsQueued: the queue's storage refers to no item that
// has left it, neither in the slot Pop took it from nor in the slots Push's
// compaction moved the queued items from (g8-backlog-pop-keeps-message,
// g8-backlog-compaction-keeps-copies), so the GC can take a message as soon as the
// subscription's goroutine has handed it on.
func TestQueue_HoldsOnlyWhatIsQueued(t *testing.T) {
	var q Queue[*int]
	check := func(op string, v int) {
		t.Helper()
		for i, p := range q.buf[:cap(q.buf)] {
			if p != nil && (i < q.head || i >= len(q.buf)) {
				t.Fatalf("after %s %d: slot %d holds item %d, outside the queued slots [%d, %d)", op, v, i, *p, q.head, len(q.buf))
			}
		}
	}
	next, want := 0, 0
	push := func() {
		v := next
		next++
		q.Push(&v)
		check("Push", v)
	}
	pop := func() {
		p, ok := q.Pop()
		if !ok || *p != want {
			t.Fatalf("popped %v, %v; want %d", p, ok, want)
		}
		check("Pop", want)
		want++
	}
	for round := range 64 { // pushes outrun pops: compactions at every size
		for range 1 + round%5 {
			push()
		}
		for range round % 4 {
			pop()
		}
	}
	for q.Len() > 0 {
		pop()
	}
}
