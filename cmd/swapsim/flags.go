package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bitswapsync/notifier/internal/swapsim"
)

// options are the flags: the load, and what is not part of it.
type options struct {
	cfg  swapsim.Config
	impl string // may name two implementations
	// Files to write besides the table; "" = none.
	svg, png, json string
}

// parse reads the flags.
func parse(args []string, stderr io.Writer) (options, error) {
	o := options{cfg: swapsim.DefaultConfig()}
	c := &o.cfg
	fs := flag.NewFlagSet("swapsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(stderr, usage) // nowhere to report a failure to write the usage
		fs.PrintDefaults()
	}
	bind(fs, &o)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.Stall == 0 {
		c.Stall = stallDefault(c.Store)
	}
	if err := c.Validate(); err != nil { // before anything runs
		return o, err
	}
	if c.ProgressEvery > 0 {
		c.Progress = stderr
		c.ProgressInPlace = isTerminal(stderr)
	}
	return o, nil
}

// bind defines the flags, which set o's fields.
func bind(fs *flag.FlagSet, o *options) {
	c := &o.cfg
	fs.StringVar(&o.impl, "impl", "both", "implementation: notifier, notifier-fetch (one-key wants through Notifier.Fetch), legacy, compat (legacy's client over bitswapcompat's layers), or both (notifier and legacy side by side)")
	fs.StringVar(&o.svg, "svg", "", "write a picture of the latency distribution and of blocks/s over time to this SVG file")
	fs.StringVar(&o.png, "png", "", "the same picture as -svg, as a PNG file")
	fs.StringVar(&o.json, "json", "", "write every figure of the table, the latency histogram and the blocks/s series to this JSON file")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load time in all; with -impl both, each runs half of it")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of every random choice of the load")
	fs.IntVar(&c.Sessions, "sessions", c.Sessions, "concurrent sessions, each fetching one DAG at a time")
	fs.IntVar(&c.Peers, "peers", c.Peers, "simulated peers (at most 64)")
	fs.IntVar(&c.WantPeers, "want-peers", c.WantPeers, "peers each WANT goes to: want-block to a holder, want-have to the others")
	fs.DurationVar(&c.MinLatency, "latency-min", c.MinLatency, "least time a peer takes to answer")
	fs.DurationVar(&c.MaxLatency, "latency-max", c.MaxLatency, "most time a peer takes to answer")
	fs.IntVar(&c.Depth, "depth", c.Depth, "levels of each DAG")
	fs.IntVar(&c.Fanout, "fanout", c.Fanout, "most children of a DAG node (each has 1..fanout)")
	fs.IntVar(&c.BlockSize, "block-size", c.BlockSize, "payload bytes per block, besides its links")
	fs.Float64Var(&c.Share, "share", c.Share, "chance that a request fetches a DAG another request is fetching")
	fs.Float64Var(&c.Refetch, "refetch", c.Refetch, "chance that a request fetches a DAG already local")
	fs.Float64Var(&c.Cancel, "cancel", c.Cancel, "chance that a request is cancelled midway")
	fs.Float64Var(&c.LocalAdd, "local", c.LocalAdd, "chance, per WANT, that a child of the key is added locally meanwhile")
	fs.Float64Var(&c.LocalOnly, "local-only", c.LocalOnly, "share of blocks no peer has, that only a local add provides")
	fs.Float64Var(&c.DupBlock, "dup", c.DupBlock, "chance that a second peer also sends a block")
	fs.Float64Var(&c.Unsolicited, "unsolicited", c.Unsolicited, "chance that a peer's message carries a block nobody asked for")
	fs.DurationVar(&c.LocalJitter, "local-jitter", c.LocalJitter, "local adds of a key's children land up to this long after its block is due, racing their Subscribe")
	fs.DurationVar(&c.Stall, "stall", 0, "a request that receives nothing for this long has lost its blocks (default 2s in memory, 10s with flatfs)")
	fs.Float64Var(&c.Faults, "faults", c.Faults, "share of the client's blockstore calls, in [0, 1], that fail or stall (even odds), drawn from -seed")
	fs.DurationVar(&c.FaultStall, "fault-stall", c.FaultStall, "how much longer a stalled blockstore call takes; under a quarter of -stall")
	fs.StringVar(&c.Store, "store", c.Store, "blockstore: mem (in memory) or flatfs (go-ds-flatfs on disk, under -dir)")
	fs.StringVar(&c.Dir, "dir", c.Dir, "with -store flatfs: a fresh directory is made and removed under this one (default $TMPDIR)")
	fs.DurationVar(&c.ProgressEvery, "progress", c.ProgressEvery, "interval of the progress line on stderr; 0 = none")
}

// stallDefault leaves a store on disk more time: with flatfs a Put can take
// milliseconds, and Publish and Subscribe hold their shards' locks across
// PutMany and Get.
func stallDefault(store string) time.Duration {
	if store == "flatfs" {
		return 10 * time.Second
	}
	return swapsim.DefaultConfig().Stall
}

// isTerminal reports whether w is a character device, where the progress
// line is rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
