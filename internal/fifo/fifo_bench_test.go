package fifo

// Queue against github.com/gammazero/deque (v1.2.1, the version boxo
// v0.42.0 requires) for the one use of Queue: a subscription's backlog of
// messages that its channel could not take yet. The element is item, laid
// out as notifier.ResponseMessage (a string and three slices: 88 bytes, four
// pointers). Every case runs both, impl last, so that
//
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl out.txt
//
// prints them side by side. ns/item is per item pushed and popped; capB is
// the storage the queue keeps after the op (a backlog lives as long as its
// subscription); allocs/op and B/op as usual.
//
//   - burst/n=N: one long-lived queue; an op pushes N items, then pops N
//     (a consumer that fell N behind, then caught up).
//   - steady/backlog=B: one long-lived queue holding B items; an op pushes one
//     and pops one (a consumer that stays B behind).
//   - fresh/n=N: an op is a backlog's whole life: a new queue, N pushes, N
//     pops, Reset (deque: the zero value, which drops the storage as Reset
//     does).
//   - reset/n=N: an op fills a long-lived queue with N items and Resets it
//     (a subscription removed while it lagged).

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/gammazero/deque"
)

// item is laid out as notifier.ResponseMessage.
type item struct {
	from                  string
	blocks, haves, dhaves []int
}

var benchSizes = []int{1, 32, 1024}

func BenchmarkQueue(b *testing.B) {
	v := item{from: "peer", blocks: make([]int, 1), haves: make([]int, 2), dhaves: make([]int, 1)}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("burst/n=%d", n), func(b *testing.B) {
			b.Run("impl=fifo", func(b *testing.B) {
				var q Queue[item]
				for b.Loop() {
					for range n {
						q.Push(v)
					}
					for range n {
						q.Pop()
					}
				}
				report(b, n, cap(q.buf))
			})
			b.Run("impl=deque", func(b *testing.B) {
				var q deque.Deque[item]
				for b.Loop() {
					for range n {
						q.PushBack(v)
					}
					for range n {
						q.PopFront()
					}
				}
				report(b, n, q.Cap())
			})
		})
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("steady/backlog=%d", n), func(b *testing.B) {
			b.Run("impl=fifo", func(b *testing.B) {
				var q Queue[item]
				for range n {
					q.Push(v)
				}
				for b.Loop() {
					q.Push(v)
					q.Pop()
				}
				report(b, 1, cap(q.buf))
			})
			b.Run("impl=deque", func(b *testing.B) {
				var q deque.Deque[item]
				for range n {
					q.PushBack(v)
				}
				for b.Loop() {
					q.PushBack(v)
					q.PopFront()
				}
				report(b, 1, q.Cap())
			})
		})
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("fresh/n=%d", n), func(b *testing.B) {
			b.Run("impl=fifo", func(b *testing.B) {
				var q Queue[item]
				for b.Loop() {
					for range n {
						q.Push(v)
					}
					for range n {
						q.Pop()
					}
					q.Reset()
				}
				report(b, n, cap(q.buf))
			})
			b.Run("impl=deque", func(b *testing.B) {
				var q deque.Deque[item]
				for b.Loop() {
					for range n {
						q.PushBack(v)
					}
					for range n {
						q.PopFront()
					}
					q = deque.Deque[item]{}
				}
				report(b, n, q.Cap())
			})
		})
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("reset/n=%d", n), func(b *testing.B) {
			b.Run("impl=fifo", func(b *testing.B) {
				var q Queue[item]
				for b.Loop() {
					for range n {
						q.Push(v)
					}
					q.Reset()
				}
				report(b, n, cap(q.buf))
			})
			b.Run("impl=deque", func(b *testing.B) {
				var q deque.Deque[item]
				for b.Loop() {
					for range n {
						q.PushBack(v)
					}
					q = deque.Deque[item]{}
				}
				report(b, n, q.Cap())
			})
		})
	}
}

// report sets ns/item for items per op and capB for a capacity of c items,
// and turns on allocs/op and B/op (measured whenever it is called).
func report(b *testing.B, items, c int) {
	b.ReportAllocs()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*items), "ns/item")
	b.ReportMetric(float64(c)*float64(unsafe.Sizeof(item{})), "capB")
}
