// Command mutate checks that the tests catch the mutations of table.go: for
// each one it applies the mutation to a copy of its file, builds the test
// binary of its package with that copy in place of the file, and runs the
// named tests, which must fail. Run it through .ci/mutants, from anywhere:
//
//	bash .ci/mutants [-only ID [-run REGEXP]] [-j 2] [-timeout 90s] [-keep] [-baseline=false] [-repeat N]
//
// To add an entry: write it in table.go, then try it alone, without the
// unmutated run, with broader and narrower -run values until the narrowest
// that catches it is found:
//
//	bash .ci/mutants -baseline=false -only ID -run '^TestA_|^TestB_'
//
// A test that catches its mutation only when goroutines happen to meet in
// a short gap passes now and then, and CI's mutation step fails on it
// although nothing changed. To see how reliably an entry is caught, run
// the mutated binary several times, on a machine as busy as CI's:
//
//	bash .ci/mutants -baseline=false -only ID -repeat 10
//
// Each run must fail; an entry caught in some runs only is FLAKY (k/N, the
// runs that caught it), which fails the check as SURVIVED does.
//
// It prints one line per mutation, in table order:
//
//	ID  GUARANTEE  OUTCOME  SECONDS  BUILD-SECONDS  [the first test that failed]
//
// where OUTCOME is caught (a test failed, the race detector reported, or
// the binary hit its -test.timeout: a hang fails CI too), SURVIVED (every
// test passed), FLAKY (with -repeat, caught in some runs only),
// anchor-missing (the old text does not occur exactly once in the
// checkout), does-not-build (the mutated package or its tests do not
// compile: an error of the table, not a catch) or error (the tool itself
// failed); BUILD-SECONDS is the part of SECONDS that the build took. It
// exits 1 unless every mutation was caught, and first checks that the
// unmutated tree passes the very tests of the table, which exits 1 too if
// not: then the table, or the checkout, is wrong, and no outcome would mean
// anything.
//
// What is built is the working tree, as .ci/boxofork.sh snapshots it: an
// uncommitted test or table entry can be checked before it is committed (in
// CI, a fresh clone, the two are the same), and no git is needed. The
// unmutated run guards against a working tree that fails.
//
// Each mutation gets its own directory under the temporary one, which holds
// the mutated file and its test binary, and nothing else: the binary is
// built in the checkout with go build's -overlay, which reads the mutated
// file in place of the original. So a run leaves the checkout as it was,
// and the packages a mutation does not touch come from the build cache (a
// copy of the whole tree, in a directory of its own, recompiled every one
// of them: ~3 s more per mutation of the root package, more for the others).
// The binary is built once with go test -race -c (the build check) and run
// in the package's directory with the flags that go test -race -count=1 -run
// would pass it: one link instead of two per mutation. At most -j mutations
// run at a time: CI's machine has two cores, and the race detector is hungry.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// stop is done once the run is interrupted: the go commands and test
// binaries in progress are killed, the rest fail at once, and the mutated
// files and binaries are removed on the way out.
var stop, _ = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)

// repeat is how many times each mutated binary runs (-repeat).
var repeat = 1

// A mutation is one breaking change and the tests that must catch it.
type mutation struct {
	id   string // short, unique, names the mechanism broken
	g    string // what it breaks: G1..G11 (SPEC.md), C (bitswapcompat, MIGRATION.md), obs (the observers) or API (a promise of the docs)
	file string // relative to the module root
	old  string // must occur exactly once in file
	new  string // what old becomes; the result must build
	pkg  string // the package whose tests catch it, as go test names it: ".", "./bitswapcompat"
	run  string // go test -run regexp: the narrowest that catches it
	why  string // what the mutation breaks, one sentence

	// timeout replaces -timeout for a mutation that makes its tests hang
	// rather than fail, which then counts as caught: short, so that the
	// hang costs little.
	timeout time.Duration
}

func main() {
	only := flag.String("only", "", "run only the mutation with this id")
	jobs := flag.Int("j", 2, "mutations run at a time")
	timeout := flag.Duration("timeout", 90*time.Second, "test binary's -test.timeout; hitting it counts as caught")
	keep := flag.Bool("keep", false, "keep the mutated files and test binaries (their directory is printed)")
	base := flag.Bool("baseline", true, "check first that the unmutated copy passes (false: to try an entry quickly)")
	runRE := flag.String("run", "", "with -only: try this -run regexp instead of the table's (to find the narrowest that catches)")
	flag.IntVar(&repeat, "repeat", 1, "run each mutated binary this many times; every run must fail (to check that a catch is reliable)")
	flag.Parse()
	if repeat < 1 {
		fmt.Fprintln(os.Stderr, "mutants: -repeat must be at least 1")
		os.Exit(2)
	}
	if *runRE != "" {
		if *only == "" {
			fmt.Fprintln(os.Stderr, "mutants: -run needs -only")
			os.Exit(2)
		}
		for i := range table {
			if table[i].id == *only {
				table[i].run = *runRE
			}
		}
	}
	if err := run(*only, *jobs, *timeout, *keep, *base); err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(1)
	}
}

func run(only string, jobs int, timeout time.Duration, keep, base bool) error {
	t0 := time.Now()
	muts, err := selected(only)
	if err != nil {
		return err
	}
	root, err := os.Getwd() // .ci/mutants runs us from the module root
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "mutants.")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("mutated files and binaries in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if base {
		if err := baseline(root, filepath.Join(tmp, "unmutated"), muts, timeout); err != nil {
			return fmt.Errorf("unmutated copy, so fix the table or the checkout first: %w", err)
		}
		fmt.Printf("unmutated copy passes the table's tests (%.0fs)\n", time.Since(t0).Seconds())
	}
	bad := mutateAll(root, tmp, muts, jobs, timeout, keep)
	fmt.Printf("%d mutations, %d not caught (SURVIVED, FLAKY or an error of the table), %.0fs in all\n",
		len(muts), bad, time.Since(t0).Seconds())
	if bad > 0 {
		return fmt.Errorf("%d of %d mutations not caught", bad, len(muts))
	}
	return nil
}

// selected checks the table and returns the mutations to run.
func selected(only string) ([]mutation, error) {
	ids := map[string]bool{}
	var out []mutation
	for _, m := range table {
		switch {
		case ids[m.id]:
			return nil, fmt.Errorf("table: id %q twice", m.id)
		case m.id == "" || m.file == "" || m.old == "" || m.pkg == "" || m.run == "" || m.why == "":
			return nil, fmt.Errorf("table: %q: a field is empty", m.id)
		case m.old == m.new:
			return nil, fmt.Errorf("table: %s: old and new are the same", m.id)
		}
		if _, err := regexp.Compile(m.run); err != nil {
			return nil, fmt.Errorf("table: %s: run: %w", m.id, err)
		}
		ids[m.id] = true
		if only == "" || only == m.id {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no mutation %q", only)
	}
	return out, nil
}

// baseline builds the test binaries of root's packages into dir and runs
// every mutation's tests, unmutated; they must pass. The tests of one package run in one binary
// run, their regexps joined, when none names a subtest ('/' splits -run
// into levels, which an alternation would cut apart).
func baseline(root, dir string, muts []mutation, timeout time.Duration) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	runs := map[string][]string{} // pkg -> -run values
	var pkgs []string
	for _, m := range muts {
		if _, ok := runs[m.pkg]; !ok {
			pkgs = append(pkgs, m.pkg)
		}
		runs[m.pkg] = append(runs[m.pkg], m.run)
	}
	for _, pkg := range pkgs {
		bin, out, err := build(root, dir, pkg, "")
		if err != nil {
			return fmt.Errorf("%s does not build:\n%s", pkg, out)
		}
		var plain, alone []string
		for _, r := range runs[pkg] {
			if strings.Contains(r, "/") {
				alone = append(alone, r)
			} else {
				plain = append(plain, "(?:"+r+")")
			}
		}
		if len(plain) > 0 {
			alone = append(alone, strings.Join(plain, "|"))
		}
		for _, r := range alone {
			if out, err := test(root, pkg, bin, r, timeout); err != nil {
				return fmt.Errorf("%s -run %q fails: %v\n%s", pkg, r, err, tail(out, 40))
			}
		}
	}
	return nil
}

// result is the outcome of one mutation.
type result struct {
	outcome string
	secs    float64
	build   float64 // of secs, how long the build took
	note    string  // the failing test, or why it is not caught
}

// mutateAll runs muts, jobs at a time, prints a line for each in table
// order as soon as it and those before it are done, and returns how many
// were not caught.
func mutateAll(root, tmp string, muts []mutation, jobs int, timeout time.Duration, keep bool) int {
	results := make([]chan result, len(muts))
	next := make(chan int, len(muts)) // the workers take the mutations in table order
	for i := range muts {
		results[i] = make(chan result, 1)
		next <- i
	}
	close(next)
	for range max(jobs, 1) {
		go func() {
			for i := range next {
				t := time.Now()
				dir := filepath.Join(tmp, muts[i].id)
				r := mutate(root, dir, muts[i], timeout)
				if !keep {
					os.RemoveAll(dir) // a race-built test binary is tens of MB
				}
				r.secs = time.Since(t).Seconds()
				results[i] <- r
			}
		}()
	}
	bad := 0
	for i, m := range muts {
		r := <-results[i]
		if !strings.HasPrefix(r.outcome, "caught") {
			bad++
		}
		fmt.Printf("%-38s %-4s %-14s %4.0fs %4.0fs  %s\n", m.id, m.g, r.outcome, r.secs, r.build, r.note)
	}
	return bad
}

// mutate writes m's file, mutated, to dir and runs its tests on a test
// binary built with it.
func mutate(root, dir string, m mutation, timeout time.Duration) result {
	file := filepath.Join(root, m.file)
	src, err := os.ReadFile(file)
	if err != nil {
		return result{outcome: "error", note: err.Error()}
	}
	if c := bytes.Count(src, []byte(m.old)); c != 1 {
		return result{outcome: "anchor-missing", note: fmt.Sprintf("old text occurs %d times in %s", c, m.file)}
	}
	if m.timeout > 0 {
		timeout = m.timeout
	}
	mutated := filepath.Join(dir, filepath.Base(m.file))
	replace := map[string]string{file: mutated}
	err = os.Mkdir(dir, 0o700)
	if err == nil {
		err = os.WriteFile(mutated, bytes.Replace(src, []byte(m.old), []byte(m.new), 1), 0o644)
	}
	if err == nil {
		err = leaveOutXTests(root, dir, m, replace) // xtest.go
	}
	var overlay []byte
	if err == nil {
		overlay, err = json.Marshal(map[string]map[string]string{"Replace": replace})
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "overlay.json"), overlay, 0o644)
	}
	if err != nil {
		return result{outcome: "error", note: err.Error()}
	}
	t := time.Now()
	bin, out, err := build(root, dir, m.pkg, filepath.Join(dir, "overlay.json"))
	if err != nil && stop.Err() == nil {
		return result{outcome: "does-not-build", note: firstLine(out)}
	}
	build := time.Since(t).Seconds()
	r := verdict(root, bin, m, timeout)
	r.build = build
	return r
}

// verdict runs m's tests on bin, its mutated test binary, -repeat times,
// and says whether they caught m.
func verdict(root, bin string, m mutation, timeout time.Duration) result {
	caught, note := 0, ""
	for range repeat {
		out, err := test(root, m.pkg, bin, m.run, timeout)
		var exit *exec.ExitError
		switch {
		case stop.Err() != nil:
			return result{outcome: "error", note: "interrupted"}
		case err == nil:
		case errors.As(err, &exit): // a test failed, timed out, or the race detector spoke
			if caught++; note == "" {
				note = failed(out)
			}
		default:
			return result{outcome: "error", note: err.Error()}
		}
	}
	switch {
	case caught == 0:
		return result{outcome: "SURVIVED", note: m.why}
	case caught < repeat:
		return result{outcome: fmt.Sprintf("FLAKY %d/%d", caught, repeat), note: note}
	case repeat > 1:
		return result{outcome: fmt.Sprintf("caught %d/%d", caught, repeat), note: note}
	default:
		return result{outcome: "caught", note: note}
	}
}

// build compiles the test binary of pkg, a package of the module at root,
// into dir with the race detector, and returns its path: the build check.
// A non-empty overlay is go build's -overlay file. It leaves out what no
// test run needs, ~1 s of a mutation's ~6 s: go vet, which go test -c runs
// as go test does and which a mutation of one expression has nothing to
// break for, and the DWARF tables of the link (-w), which only a debugger
// reads (stack traces and the race detector's reports read the symbol
// table, which stays).
func build(root, dir, pkg, overlay string) (bin string, out []byte, err error) {
	bin = filepath.Join(dir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg)+".test")
	args := []string{"test", "-race", "-vet=off", "-ldflags=-w", "-c", "-o", bin}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	cmd := exec.CommandContext(stop, "go", append(args, pkg)...)
	cmd.Dir = root
	out, err = cmd.CombinedOutput()
	return bin, out, err
}

// test runs bin, pkg's test binary, as go test -race -count=1 -run r pkg
// would, in pkg's directory under root. A binary that outlives timeout by a
// minute (its own -test.timeout failed to end it) is killed.
func test(root, pkg, bin, r string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(stop, timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run", r, "-test.count=1",
		"-test.timeout", timeout.String(), "-test.paniconexit0")
	cmd.Dir = filepath.Join(root, pkg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

var failRE = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)|^panic: (test timed out)|^(WARNING: DATA RACE)`)

// failed names the first test that failed in out, or what ended the run.
func failed(out []byte) string {
	m := failRE.FindSubmatch(out)
	if m == nil {
		return firstLine(out)
	}
	return string(bytes.Join(m[1:], nil))
}

func firstLine(out []byte) string {
	for l := range strings.Lines(string(out)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}

func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
