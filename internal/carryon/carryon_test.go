package carryon

import (
	"runtime"
	"slices"
	"testing"
)

// Every item is visited once and after runs once, whichever items panic;
// the caller sees the last panic.
func TestEach_CarriesOnAfterPanics(t *testing.T) {
	var visited []int
	afters := 0
	var got any
	func() {
		defer func() { got = recover() }()
		Each([]int{1, 2, 3, 4}, func(i int) {
			visited = append(visited, i)
			if i == 1 || i == 3 {
				panic(i)
			}
		}, func() { afters++ })
	}()
	if !slices.Equal(visited, []int{1, 2, 3, 4}) || afters != 1 || got != 3 {
		t.Fatalf("visited %v, after ran %d times, recovered %v; want [1 2 3 4], 1, 3", visited, afters, got)
	}
}

// runtime.Goexit cannot be recovered, but the goroutine still visits the
// rest before it ends.
func TestEach_CarriesOnAfterGoexit(t *testing.T) {
	var visited []int
	afters := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Each([]int{1, 2}, func(i int) {
			visited = append(visited, i)
			if i == 1 {
				runtime.Goexit()
			}
		}, func() { afters++ })
	}()
	<-done
	if !slices.Equal(visited, []int{1, 2}) || afters != 1 {
		t.Fatalf("visited %v, after ran %d times; want [1 2], 1", visited, afters)
	}
}

// A panic in after is not carried on: after is not run again.
func TestEach_AfterRunsOnce(t *testing.T) {
	afters := 0
	func() {
		defer func() { _ = recover() }()
		Each([]int{1}, func(int) {}, func() {
			afters++
			panic("after")
		})
	}()
	if afters != 1 {
		t.Fatalf("after ran %d times, want 1", afters)
	}
}

// Drain visits the items that f appends, after the others, and carries on
// after a panic, with those appended before it: the caller sees the last
// panic once the queue is empty.
func TestDrain_VisitsAppendedItemsAndCarriesOnAfterPanics(t *testing.T) {
	var visited []int
	q := []int{1, 2}
	var got any
	func() {
		defer func() { got = recover() }()
		Drain(&q, func(i int) {
			visited = append(visited, i)
			if i < 3 {
				q = append(q, i+2) // 1 queues 3, 2 queues 4
			}
			if i == 1 || i == 4 {
				panic(i)
			}
		})
	}()
	if !slices.Equal(visited, []int{1, 2, 3, 4}) || len(q) != 0 || got != 4 {
		t.Fatalf("visited %v, left %v, recovered %v; want [1 2 3 4], [], 4", visited, q, got)
	}
}
