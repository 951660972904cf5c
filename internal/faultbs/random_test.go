package faultbs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
)

// outcomes makes the same sequence of calls on s and returns what became of
// each: "ok", "fail", or "slow" (a Get that took delay).
func outcomes(t *testing.T, s *Store, delay time.Duration) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for i := range 100 {
		b := blocks.NewBlock(fmt.Appendf(nil, "block %d", i%10)) // each key called 10 times
		start := time.Now()
		_, err := s.Get(ctx, b.Cid())
		switch {
		case errors.Is(err, ErrInjected):
			out = append(out, "fail")
		case time.Since(start) >= delay:
			out = append(out, "slow")
		default:
			out = append(out, "ok")
		}
	}
	return out
}

func count(xs []string, x string) int64 {
	var n int64
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}

// A seed and a sequence of calls fix the faults; Injected counts them. The
// delay is fake time (synctest), so the test does not wait for it.
func TestStore_RandomIsDrawnFromTheSeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = time.Hour
		run := func(seed uint64) ([]string, *Store) {
			s, _ := newStore()
			s.SetRandom(Random{P: 0.5, Delay: delay, Seed: seed})
			return outcomes(t, s, delay), s
		}
		a, s := run(1)
		b, _ := run(1)
		c, _ := run(2)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("one seed, two outcomes:\n%v\n%v", a, b)
		}
		if fmt.Sprint(a) == fmt.Sprint(c) {
			t.Fatalf("seeds 1 and 2 drew the same faults: %v", a)
		}
		fails, slows := count(a, "fail"), count(a, "slow")
		if fails == 0 || slows == 0 || count(a, "ok") == 0 {
			t.Fatalf("P 0.5: %d failed, %d slow of 100", fails, slows)
		}
		if got := s.Injected(Get); got != (Injected{Failed: fails, Slowed: slows}) {
			t.Fatalf("Injected(Get) = %+v, want %d failed, %d slowed", got, fails, slows)
		}
		if got := s.Injected(PutMany); got != (Injected{}) {
			t.Fatalf("Injected(PutMany) = %+v, want none", got)
		}
	})
}

func TestStore_RandomAllOrNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, inner := newStore()
		s.SetRandom(Random{P: 1, Delay: time.Second, Seed: 3})
		out := outcomes(t, s, time.Second)
		if count(out, "ok") != 0 {
			t.Fatalf("P 1: some calls passed: %v", out)
		}
		s.SetRandom(Random{})
		if out := outcomes(t, s, time.Second); count(out, "ok") != 100 {
			t.Fatalf("after SetRandom(Random{}): %v", out)
		}
		// A PutMany that fails writes nothing.
		s.SetRandom(Random{P: 1, Seed: 3})
		var failed int
		for i := range 20 {
			b := blocks.NewBlock(fmt.Appendf(nil, "put %d", i))
			if err := s.PutMany(context.Background(), []blocks.Block{b}); err != nil {
				failed++
				if ok, _ := inner.Has(context.Background(), b.Cid()); ok {
					t.Fatalf("a failed PutMany wrote %s", b.Cid())
				}
			}
		}
		if failed == 0 || int64(failed) != s.Injected(PutMany).Failed {
			t.Fatalf("%d PutMany failed, Injected says %+v", failed, s.Injected(PutMany))
		}
	})
}

func TestStore_RandomDelayHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newStore()
		s.SetRandom(Random{P: 1, Delay: time.Hour, Seed: 1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		for i := 0; s.Injected(Has).Slowed == 0; i++ {
			_, err := s.Has(ctx, blocks.NewBlock(fmt.Appendf(nil, "%d", i)).Cid())
			if s.Injected(Has).Slowed == 1 && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slowed Has: %v, want the context's error", err)
			}
		}
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("slowed Has returned after %v, want the context's minute", d)
		}
	})
}

func TestStore_SetRandomRefusesBadInput(t *testing.T) {
	for _, r := range []Random{{P: -0.1}, {P: 1.5}, {P: math.NaN()}, {P: 0.5, Delay: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SetRandom(%+v) did not panic", r)
				}
			}()
			New(nil).SetRandom(r)
		}()
	}
}
