package swapsim

import (
	"context"
	"fmt"
	"runtime"
	"time"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// Report is what one run measured and found.
type Report struct {
	Impl, Store string
	Elapsed     time.Duration // from the first request to the end of the last
	Load        time.Duration // the load phase: Config.Duration, or less if cancelled

	// Per second of the load phase (the drain after it, which waits for
	// requests in flight, would penalize a client whose requests stall).
	BlockRate, MessageRate, InfoRate float64

	Requests, Completed, Cancelled, Stalled int64
	// CutShort counts the requests that failed because their client's
	// PubSub ended a GetBlocks call early (compat, after a failed store:
	// worker.cutShort). Their callers get an error; they are no violation.
	CutShort                               int64
	Blocks, Haves, DontHaves               int64 // read by the sessions
	Messages                               int64 // handed to the client, local adds included
	Wants, Dropped, LocalAdds, Unsolicited int64 // WANTs sent; answers dropped after a CANCEL

	// Faults injected into the client's blockstore calls (Config.Faults), and
	// the recovery from them: Wants retried after a failed blockstore check,
	// messages sent again after a failed store.
	StoreCalls, FaultsFailed, FaultsStalled int64
	Retries, Resent                         int64

	// Notifier.Fetch's outcomes (notifier-fetch only): the block returned (a
	// hit), a request returned, and of those the requests whose block reached
	// them before Fetch returned (its general path, or a Publish racing it).
	FetchHits, FetchRequests, FetchEarly int64

	LatencyP50, LatencyP99, LatencyMax time.Duration
	// Latency is the histogram of every delivery's latency, its non-empty
	// buckets in order (16 per power of two): the counts add up to Blocks.
	Latency []Bucket

	// Series is the count of blocks delivered, sampled every 100ms from the
	// start of the load to the end of the drain (the last interval may be up
	// to half as long again); BlockRates turns it into blocks/s.
	Series []Sample

	// Goroutines: before the run, the most seen, after Close; Sim is how
	// many of them the simulator itself runs (sessions, network, sampler).
	GoroutinesBefore, GoroutinesPeak, GoroutinesEnd, GoroutinesSim int
	HeapPeak, HeapEnd                                              uint64 // live heap: client, blockstore and simulator

	Violations [numViolations]int64 // indexed by Violation
	Examples   []string             // the first few of each kind
}

// TotalViolations returns the number of violations of every kind.
func (r *Report) TotalViolations() int64 {
	var n int64
	for _, v := range r.Violations {
		n += v
	}
	return n
}

// Run runs the load of cfg against cfg.Impl and checks the invariants. A
// violation is not an error: it is in the Report. Run returns an error only
// if the run could not be set up (bad Config, blockstore). Cancelling ctx
// ends the load early; requests in flight still finish.
func Run(ctx context.Context, cfg Config) (Report, error) {
	f := factories[cfg.Impl]
	if f == nil {
		return Report{}, fmt.Errorf("swapsim: unknown implementation %q: want %s", cfg.Impl, implNames)
	}
	return run(ctx, cfg, f)
}

// implNames lists the names of factories, for errors.
const implNames = "notifier, notifier-fetch, legacy or compat"

// Impls returns the implementations that an -impl value names: one of
// factories, or "both", the notifier and legacy side by side.
func Impls(name string) ([]string, error) {
	if name == "both" {
		return []string{"notifier", "legacy"}, nil
	}
	if factories[name] != nil {
		return []string{name}, nil
	}
	return nil, fmt.Errorf("swapsim: unknown implementation %q: want %s, or both", name, implNames)
}

// Fatal reports whether a violation of the implementation name fails a run
// of cmd/swapsim: of every one but legacy, whose violations are why the
// notifier exists.
func Fatal(name string) bool { return name != "legacy" }

func run(ctx context.Context, cfg Config, f Factory) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, fmt.Errorf("swapsim: %w", err)
	}
	runtime.GC()
	before := runtime.NumGoroutine()
	inner, release, err := openStore(&cfg)
	if err != nil {
		return Report{}, err
	}
	s := newSim(&cfg, inner, f)
	mon := newMonitor(s)
	mon.begin()
	s.net.start()
	mark, elapsed := s.load(ctx)
	s.net.close()
	s.checkIdle()
	mon.end()
	rep := s.report(elapsed, mon)
	rep.setRates(mark)
	err = release() // before settle: flatfs runs a goroutine until closed
	rep.GoroutinesBefore = before
	rep.GoroutinesEnd = s.settle(before)
	rep.Violations = s.chk.total()
	rep.Examples = s.chk.firstExamples()
	return rep, err
}

// checkIdle checks that the client holds nothing once every session is
// closed, and closes it.
func (s *sim) checkIdle() {
	if in := s.impl.Interest(); in != (notifier.Stats{}) {
		s.chk.violate(IndexNotEmpty, "%d keys, %d wants, %d sessions left", in.Keys, in.Wants, in.Subscriptions)
	}
	if err := s.impl.Close(); err != nil {
		s.chk.violate(ImplError, "close: %v", err)
	}
	s.chk.finish()
}

// settle waits, for up to settleLimit, for the goroutine count to fall back
// to before; it flags a leak if it does not and returns the count.
func (s *sim) settle(before int) int {
	deadline := time.Now().Add(settleLimit)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return n
		}
		if time.Now().After(deadline) {
			s.chk.violate(GoroutineLeak, "%d goroutines left after Close (%d before the run)", n, before)
			return n
		}
		time.Sleep(10 * time.Millisecond) // polling the runtime: there is nothing to wait on
	}
}

const settleLimit = 2 * time.Second

func (r *Report) setRates(m loadMark) {
	r.Load = m.elapsed
	if sec := m.elapsed.Seconds(); sec > 0 {
		r.BlockRate = float64(m.blocks) / sec
		r.MessageRate = float64(m.messages) / sec
		r.InfoRate = float64(m.haves+m.dontHaves) / sec
	}
}

// Rate is the blocks/s of the interval of a Series that ends At.
type Rate struct {
	At     time.Duration
	PerSec float64
}

// BlockRates returns the blocks/s of each interval of r.Series, one per
// Sample, the first from the start of the load.
func (r *Report) BlockRates() []Rate {
	rates := make([]Rate, len(r.Series))
	var prev Sample
	for i, s := range r.Series {
		rates[i].At = s.At
		if dt := s.At - prev.At; dt > 0 {
			rates[i].PerSec = float64(s.Blocks-prev.Blocks) / dt.Seconds()
		}
		prev = s
	}
	return rates
}

func heapAfterGC() uint64 {
	runtime.GC()
	return heapBytes()
}

func (s *sim) report(elapsed time.Duration, mon *monitor) Report {
	c := &s.ctr
	rep := Report{
		Impl: s.cfg.Impl, Store: s.cfg.Store, Elapsed: elapsed,
		Requests: c.requests.Load(), Completed: c.completed.Load(),
		Cancelled: c.cancelled.Load(), Stalled: c.stalled.Load(), CutShort: c.cutShort.Load(),
		Blocks: c.blocks.Load(), Haves: c.haves.Load(), DontHaves: c.dontHaves.Load(),
		Messages: c.messages.Load(), Wants: c.wants.Load(), Dropped: c.dropped.Load(),
		LocalAdds: c.localAdds.Load(), Unsolicited: c.junk.Load(),
		Retries: c.retries.Load(), Resent: c.resent.Load(),
		LatencyP50: s.lat.quantile(0.50), LatencyP99: s.lat.quantile(0.99),
		LatencyMax: time.Duration(s.lat.max.Load()), Latency: s.lat.buckets(),
		Series:         mon.series,
		GoroutinesPeak: mon.peakG, GoroutinesSim: s.cfg.Sessions + s.net.goroutines() + 1,
		HeapPeak: mon.peakHeap, HeapEnd: heapAfterGC(),
	}
	if f, ok := s.impl.(fetcher); ok {
		rep.FetchHits, rep.FetchRequests, rep.FetchEarly = f.fetchCounts()
	}
	for _, m := range []faultbs.Method{faultbs.Has, faultbs.Get, faultbs.PutMany} {
		inj := s.fault.Injected(m)
		rep.StoreCalls += s.fault.Calls(m)
		rep.FaultsFailed += inj.Failed
		rep.FaultsStalled += inj.Slowed
	}
	return rep
}
