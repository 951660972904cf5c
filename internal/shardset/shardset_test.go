package shardset

import (
	"slices"
	"testing"
)

func collect(s Set) []int {
	var got []int
	for i := s.Next(0); i >= 0; i = s.Next(i + 1) {
		got = append(got, i)
	}
	return got
}

func TestSet_IteratesAscending(t *testing.T) {
	s := New(300)
	want := []int{0, 1, 63, 64, 65, 127, 128, 200, 299}
	for _, i := range []int{200, 0, 64, 299, 1, 63, 128, 65, 127, 64} {
		s.Add(i)
	}
	if got := collect(s); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, i := range want {
		if !s.Has(i) {
			t.Fatalf("Has(%d) = false", i)
		}
	}
	if s.Has(2) || s.Has(298) {
		t.Fatal("Has reports an index never added")
	}
	s.Clear()
	if got := collect(s); got != nil {
		t.Fatalf("after Clear got %v", got)
	}
}

func TestSet_NextPastEnd(t *testing.T) {
	s := New(64)
	s.Add(63)
	if got := s.Next(64); got != -1 {
		t.Fatalf("Next(64) = %d, want -1", got)
	}
	if got := s.Next(63); got != 63 {
		t.Fatalf("Next(63) = %d, want 63", got)
	}
}
