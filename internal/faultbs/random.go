package faultbs

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"time"

	cid "github.com/ipfs/go-cid"
)

// Random makes a share of the calls misbehave by chance, on top of the modes
// that Set gives: a call in mode Pass is faulted with probability P, and a
// faulted call either fails (as in Fail: nothing is read or written) or is
// slow (it waits Delay, then passes), with even odds.
//
// The draw is a hash of Seed, the method, the call's key (a PutMany's first
// block) and how many calls of that method on that key came before: so a
// program whose calls on each key come in the same order meets the same
// faults, however its goroutines interleave.
type Random struct {
	P     float64       // chance that a call is faulted, in [0, 1]
	Delay time.Duration // how long a slow call waits before it proceeds
	Seed  uint64
}

// Injected counts the faults that Random injected into one method.
type Injected struct {
	Failed, Slowed int64
}

// SetRandom makes the calls in mode Pass from now on misbehave as r says; a
// zero Random stops that. It panics if r.P is not in [0, 1] or r.Delay is
// negative: that is a test's mistake.
func (s *Store) SetRandom(r Random) {
	if !(r.P >= 0 && r.P <= 1) || r.Delay < 0 {
		panic(fmt.Sprintf("faultbs: random faults with P %v, delay %v: want P in [0, 1], delay >= 0", r.P, r.Delay))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.random = r
	if s.tries == nil {
		s.tries = make(map[try]uint32)
	}
}

// Injected returns how many faults SetRandom's draws injected into m so far.
func (s *Store) Injected(m Method) Injected {
	return Injected{Failed: s.failed[m].Load(), Slowed: s.slowed[m].Load()}
}

// try names the calls of one method on one key, which the draw counts.
type try struct {
	m Method
	k cid.Cid
}

// draw is what a call in mode Pass does under Random.
type draw int

const (
	drawPass draw = iota
	drawFail
	drawSlow
)

// drawLocked draws the fate of a call of m on keys. The caller holds s.mu.
func (s *Store) drawLocked(m Method, keys []cid.Cid) draw {
	if s.random.P == 0 {
		return drawPass
	}
	t := try{m: m}
	if len(keys) > 0 {
		t.k = keys[0]
	}
	n := s.tries[t]
	s.tries[t] = n + 1
	h := fnv.New64a()
	var buf [13]byte
	binary.LittleEndian.PutUint64(buf[:8], s.random.Seed)
	buf[8] = byte(m)
	binary.LittleEndian.PutUint32(buf[9:], n)
	_, _ = h.Write(buf[:]) // a hash.Hash never fails to write
	_, _ = h.Write(t.k.Bytes())
	x := mix(h.Sum64())
	if float64(x>>11)/(1<<53) >= s.random.P {
		return drawPass
	}
	if x&1 == 0 {
		return drawFail
	}
	return drawSlow
}

// mix is splitmix64's finalizer: FNV's low bits are weak on their own.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// slow waits d, or until ctx is done; then it returns ctx's error, if any.
func slow(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
