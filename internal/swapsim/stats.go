package swapsim

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// histogram counts durations in log-linear buckets: 16 per power of two, so a
// percentile is off by at most 1/16. It is safe for concurrent use.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

const (
	histSub     = 16 // buckets per power of two
	histBuckets = 2*histSub + 60*histSub
)

// bucket returns v's bucket: v itself below 2*histSub, then histSub buckets
// per power of two.
func bucket(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(v) - 5 // v>>e is in [histSub, 2*histSub)
	return 2*histSub + (e-1)*histSub + int(v>>e) - histSub
}

// bucketTop returns the largest value in bucket b.
func bucketTop(b int) uint64 {
	if b < 2*histSub {
		return uint64(b)
	}
	e := (b-2*histSub)/histSub + 1
	m := uint64((b-2*histSub)%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *histogram) record(d int64) {
	d = max(d, 0)
	h.counts[bucket(uint64(d))].Add(1)
	h.n.Add(1)
	for m := h.max.Load(); d > m && !h.max.CompareAndSwap(m, d); m = h.max.Load() {
	}
}

// quantile returns an upper bound of the q-quantile, 0 if nothing was recorded.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := min(max(uint64(math.Ceil(q*float64(n))), 1), n)
	var seen uint64
	for b := range h.counts {
		if seen += h.counts[b].Load(); seen >= rank {
			return time.Duration(min(bucketTop(b), uint64(h.max.Load())))
		}
	}
	return time.Duration(h.max.Load())
}

// Bucket is one bucket of the latency histogram: Count deliveries took at
// most Le, and more than the previous bucket's Le.
type Bucket struct {
	Le    time.Duration
	Count int64
}

// buckets returns the non-empty buckets in order. The last one's bound is the
// largest value recorded, as quantile's is.
func (h *histogram) buckets() []Bucket {
	var bs []Bucket
	for b := range h.counts {
		if n := h.counts[b].Load(); n > 0 {
			bs = append(bs, Bucket{Le: time.Duration(bucketTop(b)), Count: int64(n)})
		}
	}
	if len(bs) > 0 {
		last := &bs[len(bs)-1]
		last.Le = min(last.Le, time.Duration(h.max.Load()))
	}
	return bs
}

// monitor samples goroutines and heap every sampleEvery and prints the
// progress line.
type monitor struct {
	s     *sim
	stop  chan struct{}
	done  chan struct{}
	start time.Time

	// Written by the monitor's goroutine until done is closed.
	peakG    int
	peakHeap uint64
	last     progressMark
	series   []Sample
}

// Sample is the count of blocks delivered to sessions since the start of the
// load, At that time; a Report holds one every sampleEvery.
type Sample struct {
	At     time.Duration
	Blocks int64
}

const sampleEvery = 100 * time.Millisecond

type progressMark struct {
	at             time.Time
	blocks, msgs   int64
	violationTotal int64
}

func newMonitor(s *sim) *monitor {
	return &monitor{s: s, stop: make(chan struct{}), done: make(chan struct{})}
}

func (m *monitor) begin() {
	m.start = time.Now()
	m.last = progressMark{at: m.start}
	// One sample per sampleEvery of the load phase, the drain's few more.
	m.series = make([]Sample, 0, int(m.s.cfg.Duration/sampleEvery)+16)
	go m.run()
}

// end stops the monitor after a last sample.
func (m *monitor) end() {
	close(m.stop)
	<-m.done
}

func (m *monitor) run() {
	defer close(m.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	next := m.start.Add(m.s.cfg.ProgressEvery)
	m.sample()
	for {
		select {
		case now := <-tick.C:
			m.sample()
			m.record(false)
			if m.s.cfg.Progress != nil && !now.Before(next) {
				m.progress(now)
				next = next.Add(m.s.cfg.ProgressEvery)
			}
		case <-m.stop:
			m.sample()
			m.record(true)
			if m.s.cfg.Progress != nil && m.s.cfg.ProgressInPlace {
				_, _ = fmt.Fprintln(m.s.cfg.Progress) // progress is best effort
			}
			return
		}
	}
}

func (m *monitor) sample() {
	m.peakG = max(m.peakG, runtime.NumGoroutine())
	m.peakHeap = max(m.peakHeap, heapBytes())
}

// record appends the blocks delivered so far to the series, unless the last
// sample is less than half an interval ago (the ticker fires late, then at
// once, when the monitor was not scheduled in time): a rate over a few
// microseconds means nothing. The last sample replaces that one instead.
func (m *monitor) record(last bool) {
	s := Sample{At: time.Since(m.start), Blocks: m.s.ctr.blocks.Load()}
	n := len(m.series)
	switch {
	case n == 0 || s.At-m.series[n-1].At >= sampleEvery/2:
		m.series = append(m.series, s)
	case last:
		m.series[n-1] = s
	}
}

// heapBytes is the live heap (HeapAlloc), read without stopping the world.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func (m *monitor) progress(now time.Time) {
	c := &m.s.ctr
	cur := progressMark{at: now, blocks: c.blocks.Load(), msgs: c.messages.Load()}
	for _, v := range m.s.chk.total() {
		cur.violationTotal += v
	}
	dt := now.Sub(m.last.at).Seconds()
	pre, post := "", "\n"
	if m.s.cfg.ProgressInPlace {
		pre, post = "\r", "\033[K"
	}
	_, _ = fmt.Fprintf(m.s.cfg.Progress, "%s%-8s %5.1fs  %s blocks/s  %s msgs/s  requests %d ok, %d cancelled, %d stalled%s  goroutines %d  heap %s  violations %d%s",
		pre, m.s.cfg.Impl, now.Sub(m.start).Seconds(),
		count(float64(cur.blocks-m.last.blocks)/dt), count(float64(cur.msgs-m.last.msgs)/dt),
		c.completed.Load(), c.cancelled.Load(), c.stalled.Load(), m.fetches(),
		runtime.NumGoroutine(), size(heapBytes()), cur.violationTotal, post)
	m.last = cur
}

// fetches is the progress line's count of Fetch outcomes so far, "" for
// an Impl that does not fetch.
func (m *monitor) fetches() string {
	f, ok := m.s.impl.(fetcher)
	if !ok {
		return ""
	}
	hits, reqs, _ := f.fetchCounts()
	return fmt.Sprintf("  fetch %d hits, %d requests", hits, reqs)
}

// count formats n with a k or M suffix.
func count(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", n/1e3)
	default:
		return fmt.Sprintf("%.0f", n)
	}
}

// size formats a byte count in MiB.
func size(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
