package swapsim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table: a metric of each report, and whether a
// ratio of two reports means something ("higher" or "lower" is better).
type row struct {
	name   string
	better string // "" = no ratio
	value  func(*Report) float64
	format func(float64) string
}

func dur(d func(*Report) time.Duration) func(*Report) float64 {
	return func(r *Report) float64 { return float64(d(r)) }
}

func integer(n func(*Report) int64) func(*Report) float64 {
	return func(r *Report) float64 { return float64(n(r)) }
}

func fmtInt(v float64) string  { return fmt.Sprintf("%.0f", v) }
func fmtRate(v float64) string { return count(v) }
func fmtSize(v float64) string { return size(uint64(v)) }

func fmtDur(v float64) string {
	d := time.Duration(v)
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

var rows = []row{
	{"load phase", "", dur(func(r *Report) time.Duration { return r.Load }), fmtDur},
	{"elapsed with drain", "", dur(func(r *Report) time.Duration { return r.Elapsed }), fmtDur},
	{"requests completed", "", integer(func(r *Report) int64 { return r.Completed }), fmtInt},
	{"requests cancelled", "", integer(func(r *Report) int64 { return r.Cancelled }), fmtInt},
	{"requests stalled", "", integer(func(r *Report) int64 { return r.Stalled }), fmtInt},
	{"blocks/s", "higher", func(r *Report) float64 { return r.BlockRate }, fmtRate},
	{"messages/s", "higher", func(r *Report) float64 { return r.MessageRate }, fmtRate},
	{"HAVE+DONT_HAVE/s", "higher", func(r *Report) float64 { return r.InfoRate }, fmtRate},
	{"latency p50", "lower", dur(func(r *Report) time.Duration { return r.LatencyP50 }), fmtDur},
	{"latency p99", "lower", dur(func(r *Report) time.Duration { return r.LatencyP99 }), fmtDur},
	{"latency max", "lower", dur(func(r *Report) time.Duration { return r.LatencyMax }), fmtDur},
	{"goroutines peak", "lower", integer(func(r *Report) int64 { return int64(r.GoroutinesPeak) }), fmtInt},
	{"  of the client", "lower", integer(func(r *Report) int64 { return int64(clientGoroutines(r)) }), fmtInt},
	{"goroutines at end", "", integer(func(r *Report) int64 { return int64(r.GoroutinesEnd) }), fmtInt},
	{"heap peak (*)", "", func(r *Report) float64 { return float64(r.HeapPeak) }, fmtSize},
	{"heap at end (*)", "", func(r *Report) float64 { return float64(r.HeapEnd) }, fmtSize},
}

// clientGoroutines estimates the client's share of the peak: the peak less
// the simulator's own goroutines and those that ran before.
func clientGoroutines(r *Report) int {
	return max(0, r.GoroutinesPeak-r.GoroutinesSim-r.GoroutinesBefore)
}

// WriteTable writes the reports side by side. With two reports it adds their
// ratio, first over second, for the rows where a ratio means something, and
// says whether higher or lower is better there.
func WriteTable(w io.Writer, reps ...Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ratio := len(reps) == 2
	head := []string{"metric"}
	for _, r := range reps {
		head = append(head, r.Impl)
	}
	if ratio {
		head = append(head, reps[0].Impl+"/"+reps[1].Impl, "better")
	}
	line(tw, head...)
	for _, rw := range rows {
		line(tw, rw.cells(reps, ratio)...)
	}
	violationRows(tw, reps)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, heapNote)
	return err
}

// heapNote is why the heap has no ratio.
const heapNote = "(*) the heap holds the in-memory blockstore and the checker's state, which grow with the\n" +
	"    blocks fetched: it is no measure of the client, and a faster client shows a larger heap."

func (rw row) cells(reps []Report, ratio bool) []string {
	cells := []string{rw.name}
	for i := range reps {
		cells = append(cells, rw.format(rw.value(&reps[i])))
	}
	if ratio {
		a, b := rw.value(&reps[0]), rw.value(&reps[1])
		switch {
		case rw.better == "":
			cells = append(cells, "", "")
		case b == 0:
			cells = append(cells, "-", rw.better)
		default:
			cells = append(cells, fmt.Sprintf("%.2fx", a/b), rw.better)
		}
	}
	return cells
}

func violationRows(tw io.Writer, reps []Report) {
	cells := []string{"VIOLATIONS"}
	for i := range reps {
		cells = append(cells, fmt.Sprint(reps[i].TotalViolations()))
	}
	line(tw, cells...)
	for v := range numViolations {
		cells := []string{"  " + v.String()}
		for _, r := range reps {
			cells = append(cells, fmt.Sprint(r.Violations[v]))
		}
		line(tw, cells...)
	}
}

// line writes one row into a tabwriter, which keeps it in memory: a write
// error of the destination surfaces from Flush, which WriteTable returns.
func line(w io.Writer, cells ...string) {
	_, _ = io.WriteString(w, strings.Join(cells, "\t")+"\t\n")
}

// WriteExamples writes the first violations each report kept.
func WriteExamples(w io.Writer, reps ...Report) error {
	var b strings.Builder
	for _, r := range reps {
		if len(r.Examples) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nfirst violations (%s):\n", r.Impl)
		for _, e := range r.Examples {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
