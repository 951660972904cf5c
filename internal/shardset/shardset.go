// Package shardset is a bit set of shard indexes. Iterating it yields the
// indexes in ascending order, which is the order in which the Notifier takes
// shard locks, so no sorting is needed to avoid deadlock.
package shardset

import "math/bits"

// Set holds shard indexes in [0, 64*len(Set)). The zero-length Set is empty.
type Set []uint64

// New returns an empty Set able to hold indexes in [0, n).
func New(n int) Set { return make(Set, (n+63)/64) }

// Add puts i in the set.
func (s Set) Add(i int) { s[i>>6] |= 1 << uint(i&63) }

// Has reports whether i is in the set.
func (s Set) Has(i int) bool { return s[i>>6]&(1<<uint(i&63)) != 0 }

// Clear empties the set.
func (s Set) Clear() { clear(s) }

// Next returns the smallest index >= i in the set, or -1 if there is none.
// Iterate with: for i := s.Next(0); i >= 0; i = s.Next(i + 1).
func (s Set) Next(i int) int {
	w := i >> 6
	if w >= len(s) {
		return -1
	}
	if m := s[w] >> uint(i&63); m != 0 {
		return i + bits.TrailingZeros64(m)
	}
	for w++; w < len(s); w++ {
		if s[w] != 0 {
			return w<<6 + bits.TrailingZeros64(s[w])
		}
	}
	return -1
}
