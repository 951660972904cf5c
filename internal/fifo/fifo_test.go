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
