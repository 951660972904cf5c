// Package fifo is an unbounded first-in first-out queue that reuses its
// storage, and lets go of a burst's once it is empty or back to an eighth of
// it (keepCap). It is not safe for concurrent use.
package fifo

// Queue is a FIFO of T. The zero value is an empty queue ready to use.
type Queue[T any] struct {
	buf  []T
	head int // buf[head:] are the queued items
}

// Len returns the number of queued items.
func (q *Queue[T]) Len() int { return len(q.buf) - q.head }

// Push appends v at the tail.
func (q *Queue[T]) Push(v T) {
	if q.head > 0 && len(q.buf) == cap(q.buf) && q.head >= len(q.buf)/2 {
		// Slide the live items down instead of growing: the consumed half is free.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, v)
}

// Peek returns the head without removing it; ok is false when the queue is
// empty.
func (q *Queue[T]) Peek() (v T, ok bool) {
	if q.head == len(q.buf) {
		return v, false
	}
	return q.buf[q.head], true
}

// Pop removes and returns the head; ok is false when the queue is empty.
func (q *Queue[T]) Pop() (v T, ok bool) {
	if q.head == len(q.buf) {
		return v, false
	}
	v = q.buf[q.head]
	var zero T
	q.buf[q.head] = zero // let the GC take what the consumer no longer needs
	q.head++
	switch n, c := q.Len(), cap(q.buf); {
	case n == 0:
		q.buf, q.head = q.buf[:0], 0
	case c > keepCap && n <= c/8:
		// A burst's storage, kept, would stay for the queue's whole life:
		// move the items left to storage of their size, which leaves room
		// for as many again (amortised: the next move needs the queue to
		// shrink to an eighth once more). A queue that empties passes here
		// first, so it never keeps more than keepCap.
		buf := make([]T, n, max(2*n, keepCap))
		copy(buf, q.buf[q.head:])
		clear(q.buf[q.head:])
		q.buf, q.head = buf, 0
	}
	return v, true
}

// keepCap is the largest storage, in items, that a queue keeps for reuse once
// it is empty, and the least it shrinks to: enough for the short backlogs of
// a consumer that keeps up, without an allocation each time, and not the
// storage of a burst.
const keepCap = 1024

// Reset drops every item and the storage.
func (q *Queue[T]) Reset() { q.buf, q.head = nil, 0 }
