// Package shrink lets a long-lived Go map give back the storage of a burst.
//
// A Go map never shrinks: deleting its keys, or clear, leaves it the storage
// that the most keys it ever held needed, about 35 bytes a key for a map of
// CIDs to pointers. An index that once held a million wants would keep some
// 35 MB for the rest of the node's life. A map whose deletions are followed by
// Fit, and its insertions by Peak.Grew, is copied into storage of its size once
// it holds an eighth of its peak or less.
//
// It is not safe for concurrent use: the map's owner calls it under the lock
// that guards the map.
package shrink

import "maps"

// Floor is the largest peak whose storage a map or slice keeps for good:
// under it, a copy would give back little (about 35 KB for a map of CIDs)
// and could cost a map that empties and fills again a copy per cycle. A
// variable only so that tests can lower it, before they start, to make every
// map and slice copy itself often (the notifier's -small-thresholds).
var Floor = 1024

// Peak is the most keys one map has held since it was made or last copied by
// Fit. The zero Peak is ready to use.
type Peak struct{ n int }

// Grew records that the map holds n keys, after an insertion.
func (p *Peak) Grew(n int) {
	if n > p.n {
		p.n = n
	}
}

// Fit returns m as it is, or, once m holds at most an eighth of p's keys and
// p is above Floor, a copy of m in storage of its size, with p reset to its
// length. Call it after deleting from m, and keep what it returns. The copy
// costs O(len(m)), and only after at least seven times as many deletions
// since the peak, so it is amortised O(1) per deletion; the one deletion that
// copies pays it all, under whatever lock guards m (about a millisecond for
// an eighth of a million CIDs).
//
// Nothing may range over m while Fit replaces it: a loop over the old map
// would not see the deletions that follow.
func Fit[M ~map[K]V, K comparable, V any](m M, p *Peak) M {
	if p.n <= Floor || len(m) > p.n/8 {
		return m
	}
	fit := make(M, len(m))
	maps.Copy(fit, m)
	p.n = len(m)
	return fit
}

// Clip returns s as it is, or, once s holds at most an eighth of its
// capacity and that capacity is above Floor, a copy of s in storage of its
// length. Call it after shortening s, and keep what it returns. Like Fit, it
// is amortised O(1) per element removed.
func Clip[S ~[]E, E any](s S) S {
	if c := cap(s); c <= Floor || len(s) > c/8 {
		return s
	}
	return append(S(nil), s...)
}
