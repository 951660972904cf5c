package swapsim

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// maxPeers bounds Config.Peers: a block's holders are a 64-bit set.
const maxPeers = 64

// Config describes one run of one implementation. Start from DefaultConfig:
// a zero field is taken at face value, not replaced by a default.
type Config struct {
	Impl     string        // "notifier", "notifier-fetch", "legacy" or "compat"
	Duration time.Duration // load phase; requests in flight then finish or stall
	Seed     uint64        // seeds every random choice of the load

	Sessions  int // concurrent sessions; each fetches one DAG at a time
	Peers     int // simulated peers, at most 64
	WantPeers int // peers each WANT goes to: want-block to one holder, want-have to the rest

	MinLatency time.Duration // a peer answers a WANT after a latency drawn
	MaxLatency time.Duration // uniformly from [MinLatency, MaxLatency]

	Depth     int // levels of each DAG; every node above the last has 1..Fanout children
	Fanout    int
	BlockSize int // payload bytes per block, on top of the links

	Share       float64 // chance that a request fetches a DAG another request is fetching
	Refetch     float64 // chance that it fetches a DAG already fetched whole (all local)
	Cancel      float64 // chance that a request is cancelled midway
	LocalAdd    float64 // chance, per WANT, that a child of the key is added locally meanwhile
	LocalOnly   float64 // share of blocks no peer has: only a local add provides them
	DupBlock    float64 // chance that a second holder also sends the block
	Unsolicited float64 // chance that a peer's message carries a block nobody asked for

	// LocalJitter spreads the local adds of a key's children over this much
	// time after the key's block is due, where the children are subscribed.
	LocalJitter time.Duration
	// Stall ends a request that received nothing for this long; its missing
	// blocks count as lost.
	Stall time.Duration

	// Faults is the share of the client's blockstore calls (Has, Get,
	// PutMany) that fail or stall, with even odds, drawn from Seed (see
	// doc.go, "Faults"). A failed call does nothing; a stalled one takes
	// FaultStall longer, then runs.
	Faults     float64
	FaultStall time.Duration

	Store string // "mem" or "flatfs"
	Dir   string // flatfs: a fresh directory is made (and removed) under it; "" = os.TempDir()

	// broken switches off a part of the recovery from faults, so that tests
	// can show that the checks catch its absence.
	broken recovery

	Progress        io.Writer     // progress lines go here; nil = none
	ProgressEvery   time.Duration // interval between progress lines
	ProgressInPlace bool          // rewrite one line with \r (for a terminal)
}

// recovery names the parts of the simulator that recover from blockstore
// faults; a set field switches that part off.
type recovery struct {
	noRetry  bool // a Want that fails ends its request
	noResend bool // a peer whose message failed to store does not send it again
}

// DefaultConfig returns the load of `go run ./cmd/swapsim`. Its chances are
// high on purpose: shared wants, cancellations and local adds are where the
// races are, and a run of a few seconds should meet them many times.
func DefaultConfig() Config {
	return Config{
		Impl:          "notifier",
		Duration:      10 * time.Second,
		Seed:          1,
		Sessions:      48,
		Peers:         16,
		WantPeers:     3,
		MinLatency:    500 * time.Microsecond,
		MaxLatency:    8 * time.Millisecond,
		Depth:         4,
		Fanout:        5,
		BlockSize:     256,
		Share:         0.5,
		Refetch:       0.05,
		Cancel:        0.2,
		LocalAdd:      0.1,
		LocalOnly:     0.05,
		DupBlock:      0.1,
		Unsolicited:   0.02,
		LocalJitter:   300 * time.Microsecond,
		Stall:         2 * time.Second,
		FaultStall:    20 * time.Millisecond,
		Store:         "mem",
		ProgressEvery: time.Second,
	}
}

// Validate reports every field that is out of range, or nil. Run calls it
// before it starts anything.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Duration > 0, "duration %v: want > 0", c.Duration)
	check(c.Sessions >= 1, "sessions %d: want >= 1", c.Sessions)
	check(c.Peers >= 1 && c.Peers <= maxPeers, "peers %d: want 1..%d", c.Peers, maxPeers)
	check(c.WantPeers >= 1 && c.WantPeers <= c.Peers, "want-peers %d: want 1..peers", c.WantPeers)
	check(c.MinLatency >= 0 && c.MinLatency <= c.MaxLatency, "latency %v..%v: want 0 <= min <= max", c.MinLatency, c.MaxLatency)
	check(c.Depth >= 1 && c.Fanout >= 1, "depth %d, fanout %d: want >= 1", c.Depth, c.Fanout)
	check(c.BlockSize >= 0, "block size %d: want >= 0", c.BlockSize)
	for name, p := range map[string]float64{
		"share": c.Share, "refetch": c.Refetch, "cancel": c.Cancel, "local": c.LocalAdd,
		"local-only": c.LocalOnly, "dup": c.DupBlock, "unsolicited": c.Unsolicited,
		"faults": c.Faults,
	} {
		check(p >= 0 && p <= 1, "%s %v: want a probability in [0, 1]", name, p)
	}
	check(c.LocalJitter >= 0, "local jitter %v: want >= 0", c.LocalJitter)
	check(c.Stall > 0, "stall %v: want > 0", c.Stall)
	// A blockstore call that stalls about as long as a request may wait would
	// pass for a lost block.
	check(c.FaultStall >= 0 && (c.Faults == 0 || c.FaultStall < c.Stall/4), "fault stall %v: want >= 0 and under a quarter of stall (%v)", c.FaultStall, c.Stall)
	check(c.Store == "mem" || c.Store == "flatfs", "store %q: want mem or flatfs", c.Store)
	check(c.Progress == nil || c.ProgressEvery > 0, "progress interval %v: want > 0", c.ProgressEvery)
	return errors.Join(errs...)
}

// String describes the load, for the progress line.
func (c *Config) String() string {
	faults := ""
	if c.Faults > 0 {
		faults = fmt.Sprintf(", faults %v (stall %v)", c.Faults, c.FaultStall)
	}
	return fmt.Sprintf("%s: %d sessions, %d peers, %v..%v latency, store %s%s, seed %d",
		c.Impl, c.Sessions, c.Peers, c.MinLatency, c.MaxLatency, c.Store, faults, c.Seed)
}
