// Command traceview summarises a runtime trace of BenchmarkW3Disjoint (go
// test -trace): how often the consumers, publishers and drain goroutines
// were made to run,
// how long the publishers ran, waited for a P and waited on a lock, and how
// much of the time the Ps held went to no goroutine (the scheduler). The
// window is the time some publisher goroutine exists (pubs ≥ 2: benchPublish
// starts them); the wake-up counts cover the whole trace.
//
//	go run . /tmp/w3.trace
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

type gstate struct {
	cat   string // pub, consumer or other
	state trace.GoState
	since trace.Time
	why   string // of a wait: its reason and the first frame of ours
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: traceview TRACE")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "traceview:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return err
	}
	v := &view{gs: map[trace.GoID]*gstate{}, spent: map[string]float64{}, wakes: map[string]int{}, running: map[trace.ProcID]bool{}}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		switch st := ev.StateTransition(); st.Resource.Kind {
		case trace.ResourceProc:
			v.proc(ev.Time(), st)
		case trace.ResourceGoroutine:
			v.goroutine(ev, st)
		}
	}
	v.report()
	return nil
}

// view is what run gathers from the trace's state transitions.
type view struct {
	gs       map[trace.GoID]*gstate
	spent    map[string]float64 // "cat|state|why" -> ns, in the window
	wakes    map[string]int     // cat -> transitions to running, whole trace
	pubs     int                // publisher goroutines alive
	winStart trace.Time
	window   float64
	running  map[trace.ProcID]bool
	pSince   trace.Time
	pTime    float64 // sum over Ps of the time each held, in the window
}

// flushProcs adds the Ps' time held since the last change, in the window.
func (v *view) flushProcs(t trace.Time) {
	if v.pubs > 0 {
		v.pTime += float64(len(v.running)) * float64(t-v.pSince)
	}
	v.pSince = t
}

// proc follows a P starting or stopping.
func (v *view) proc(t trace.Time, st trace.StateTransition) {
	v.flushProcs(t)
	if _, to := st.Proc(); to == trace.ProcRunning {
		v.running[st.Resource.Proc()] = true
	} else {
		delete(v.running, st.Resource.Proc())
	}
}

// goroutine follows a goroutine's change of state, opening the window at
// the first publisher and closing it when the last one ends.
func (v *view) goroutine(ev trace.Event, st trace.StateTransition) {
	t, id := ev.Time(), st.Resource.Goroutine()
	from, to := st.Goroutine()
	g := v.gs[id]
	if g == nil {
		g = &gstate{cat: classify(ev, st, from), state: from, since: t}
		v.gs[id] = g
		if g.cat == "pub" && from == trace.GoNotExist {
			v.flushProcs(t)
			if v.pubs == 0 {
				v.winStart = t
			}
			v.pubs++
		}
	}
	if v.pubs > 0 {
		v.spent[g.cat+"|"+g.state.String()+"|"+g.why] += float64(t - g.since)
	}
	if to == trace.GoRunning {
		v.wakes[g.cat]++
	}
	g.state, g.since, g.why = to, t, ""
	if to == trace.GoWaiting {
		g.why = waitReason(ev, st)
	}
	if g.cat == "pub" && to == trace.GoNotExist {
		v.flushProcs(t)
		if v.pubs--; v.pubs == 0 {
			v.window += float64(t - v.winStart)
		}
	}
}

// report prints the wake-ups and, if there was a window, where the time in
// it went.
func (v *view) report() {
	fmt.Printf("made to run, whole trace: consumers %d, publishers %d, drains %d, others %d\n",
		v.wakes["consumer"], v.wakes["pub"], v.wakes["drain"], v.wakes["other"])
	if v.window == 0 {
		fmt.Println("no publisher goroutine: no window (pubs=1 publishes on the benchmark's goroutine)")
		return
	}
	var gRun float64
	for k, x := range v.spent {
		if strings.Contains(k, "|Running|") {
			gRun += x
		}
	}
	fmt.Printf("window %.1f ms: Ps held %.1f ms, goroutines running %.1f ms, Ps held running none %.1f ms (%.0f %%)\n",
		v.window/1e6, v.pTime/1e6, gRun/1e6, (v.pTime-gRun)/1e6, 100*(v.pTime-gRun)/v.pTime)
	keys := make([]string, 0, len(v.spent))
	for k := range v.spent {
		if !strings.HasPrefix(k, "other|") {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return v.spent[keys[i]] > v.spent[keys[j]] })
	for _, k := range keys {
		fmt.Printf("%10.1f ms  %s\n", v.spent[k]/1e6, k)
	}
}

// classify names a goroutine when the trace first shows it: a publisher if
// benchPublish started it (sync.WaitGroup.Go), a consumer if it runs a
// benchkit consume loop, a drain if it runs Subscription.drain.
func classify(ev trace.Event, st trace.StateTransition, from trace.GoState) string {
	if from != trace.GoNotExist {
		return "other"
	}
	start := ""
	for fr := range st.Stack.Frames() {
		start = fr.Func
		break
	}
	switch {
	case strings.Contains(start, "consume"):
		return "consumer"
	case strings.Contains(start, "drain"):
		return "drain"
	case !strings.Contains(start, "WaitGroup"):
		return "other"
	}
	for fr := range ev.Stack().Frames() {
		if strings.Contains(fr.Func, "benchPublish") {
			return "pub"
		}
	}
	return "other"
}

// waitReason is the reason of a wait and the first frame of the module or of
// package sync on the waiting stack.
func waitReason(ev trace.Event, st trace.StateTransition) string {
	why := st.Reason
	for fr := range ev.Stack().Frames() {
		if strings.Contains(fr.Func, "bitswapsync") || strings.HasPrefix(fr.Func, "sync.") {
			return why + " @" + fr.Func
		}
	}
	return why
}
