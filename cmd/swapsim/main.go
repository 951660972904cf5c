// Command swapsim simulates a bitswap client under load, with the notifier
// (-impl notifier; -impl notifier-fetch sends one-key wants through
// Notifier.Fetch), with today's two-layer design (internal/legacy), or with
// that design's client over bitswapcompat's two layers (-impl compat), checks
// the invariants of SPEC.md at the end, and prints what it measured.
//
// Sessions fetch DAGs of blocks from simulated peers that answer WANTs with
// HAVE, DONT_HAVE and blocks after a random latency; some blocks are added
// locally while they are being fetched, and some requests are cancelled
// midway. See internal/swapsim for the load and the checks.
//
// Exit status: 0 if the notifier (or compat) kept every invariant
// (violations of legacy are reported, not fatal: they are why the notifier
// exists), 1 if it violated one, 2 if the run could not be set up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/bitswapsync/notifier/internal/swapsim"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: swapsim [flags]

Simulates a bitswap client under load and checks, at the end, that every
request that was not cancelled got every block exactly once, that no block was
stored that nobody asked for, that the index is empty, that every want that
ended with its key's last produced one CANCEL, and that no CANCEL overtook a
later WANT. Progress goes to stderr every -progress; the table to stdout.

With -impl both, the notifier runs first, then legacy, each for half of
-duration, with the same seed; the table then shows notifier/legacy ratios.
-impl notifier-fetch runs the notifier as a block service's GetBlock uses it
too: each one-key want (a root, a node with one child) is a Notifier.Fetch,
one request per call, whose delivery function queues what it gets for the
session; the table then counts Fetch's hits and requests. -impl compat runs
legacy's client, in boxo's call order, over bitswapcompat's PubSub and
SessionInterestManager (one Notifier with the client's blockstore, which
reports the CANCELs): the swap that MIGRATION.md describes, to its step 3.
Requests in flight when the duration ends finish (or stall, after -stall)
before the checks, so a run takes a little longer than -duration.

-faults P makes a share P of the client's blockstore calls (Has, Get,
PutMany), for every implementation, fail (writing nothing) or stall (take
-fault-stall longer), with even odds, drawn from -seed. The simulated peers
recover as a real network does: a message whose blocks failed to store is
sent again after a latency (a peer answering the repeated WANT; a local add
retried), and a request whose blockstore check failed repeats its Want after
1ms, for up to -stall. Every invariant must still hold, and every request
that was not cancelled must complete. The table counts the injected faults
and the recovery.

Exit status: 0 if the notifier, either way, or compat kept every invariant
(legacy's violations are reported, never fatal), 1 if it did not, 2 on a
usage or setup error or if a file of -svg, -png or -json could not be
written. Under -faults, compat meets a failed store, which bitswapcompat's
boxo-shaped Publish cannot return: it ends the calls that wait for the
message's blocks, and their requests fail, counted cut short, as boxo's block
service fails such a GetBlocks. A block that only a local add provides, whose
checks by the client and by the Notifier both failed, is asked of peers that
do not have it: with legacy its request stalls, as in boxo; compat checks the
call's keys again later and publishes the block it finds (internal/swapsim,
"Faults"), so its requests must complete.

-json writes a JSON object (schema "swapsim/v1", see internal/swapsim's
WriteJSON) with the figures of the table, per implementation, under the keys
of its rows (load_s, blocks_per_s, latency_p99_s, ...), the latency histogram
and the blocks/s series; -svg and -png draw the latency distribution and the
blocks/s over time of each implementation in one picture.

Flags:
`

// run is main without the exit: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		warn(stderr, "swapsim:", err)
		return 2
	}
	cfg := opts.cfg
	if cfg.Faults > 0 {
		quietStoreErrors()
	}
	names, err := swapsim.Impls(opts.impl)
	if err != nil {
		warn(stderr, err)
		return 2
	}
	files, err := createFiles(opts)
	if err != nil {
		warn(stderr, "swapsim:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	reps, err := runAll(ctx, cfg, names, stderr)
	if err != nil {
		removeFiles(files)
		warn(stderr, err)
		return 2
	}
	err = errors.Join(swapsim.WriteTable(stdout, reps...), swapsim.WriteExamples(stdout, reps...),
		writeFiles(files, reps))
	if err != nil {
		warn(stderr, "swapsim:", err)
		return 2
	}
	return status(reps)
}

// outFile is a file that -svg, -png or -json names, created before the run
// (so that a bad path fails at once, not after it) and written after it.
type outFile struct {
	f     *os.File
	write func(io.Writer, []swapsim.Report) error
}

// createFiles creates the files the options name. On an error it removes
// those it created.
func createFiles(o options) ([]outFile, error) {
	var files []outFile
	for _, f := range []struct {
		name  string
		write func(io.Writer, []swapsim.Report) error
	}{
		{o.svg, func(w io.Writer, reps []swapsim.Report) error { return swapsim.WritePlot(w, "svg", o.cfg, reps...) }},
		{o.png, func(w io.Writer, reps []swapsim.Report) error { return swapsim.WritePlot(w, "png", o.cfg, reps...) }},
		{o.json, func(w io.Writer, reps []swapsim.Report) error { return swapsim.WriteJSON(w, o.cfg, reps...) }},
	} {
		if f.name == "" {
			continue
		}
		file, err := os.Create(f.name)
		if err != nil {
			removeFiles(files)
			return nil, err
		}
		files = append(files, outFile{f: file, write: f.write})
	}
	return files, nil
}

// writeFiles writes and closes the files.
func writeFiles(files []outFile, reps []swapsim.Report) error {
	var errs []error
	for _, f := range files {
		err := f.write(f.f, reps)
		if cerr := f.f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.f.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// removeFiles closes and removes files that will not be written. Errors are
// ignored: the run has already failed, and that is what is reported.
func removeFiles(files []outFile) {
	for _, f := range files {
		_ = f.f.Close()
		_ = os.Remove(f.f.Name())
	}
}

// runAll runs each implementation for an equal share of cfg.Duration.
func runAll(ctx context.Context, cfg swapsim.Config, names []string, stderr io.Writer) ([]swapsim.Report, error) {
	cfg.Duration /= time.Duration(len(names))
	var reps []swapsim.Report
	for _, name := range names {
		cfg.Impl = name
		warn(stderr, fmt.Sprintf("swapsim: %s for %v", &cfg, cfg.Duration))
		rep, err := swapsim.Run(ctx, cfg)
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

// status is 1 if the notifier, used either way, violated an invariant.
func status(reps []swapsim.Report) int {
	for i := range reps {
		if swapsim.Fatal(reps[i].Impl) && reps[i].TotalViolations() > 0 {
			return 1
		}
	}
	return 0
}

// quietStoreErrors stops the notifier from logging each blockstore error: the
// injected ones come by the hundred a second, and the table counts them.
func quietStoreErrors() {
	_ = logging.SetLogLevel("bitswap/notifier", "fatal") // the subsystem exists: the notifier package is linked in
}

// warn writes a line to stderr. A failure to write there has nowhere to be
// reported, so it is ignored.
func warn(stderr io.Writer, a ...any) {
	_, _ = fmt.Fprintln(stderr, a...)
}
