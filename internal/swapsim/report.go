package swapsim

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table: a metric of each report, and whether a
// ratio of two reports means something ("higher" or "lower" is better). key
// names the metric in the JSON output (WriteJSON); its suffix is its unit.
type row struct {
	name   string
	key    string
	better string // "" = no ratio
	unit   unit
	value  func(*Report) float64
}

// unit is how a row's value is printed in the table and written in JSON.
type unit int

const (
	unitCount unit = iota // a number of things
	unitRate              // per second
	unitDur               // nanoseconds in value, seconds in JSON
	unitBytes             // bytes, printed in MiB
)

func (u unit) format(v float64) string {
	switch u {
	case unitRate:
		return count(v)
	case unitDur:
		return fmtDur(v)
	case unitBytes:
		return size(uint64(v))
	}
	return fmt.Sprintf("%.0f", v)
}

// json returns v as written in JSON: durations in seconds, the rest as is.
func (u unit) json(v float64) float64 {
	if u == unitDur {
		return time.Duration(v).Seconds() // as Duration.Seconds rounds: v is a whole Duration
	}
	return v
}

func dur(d func(*Report) time.Duration) func(*Report) float64 {
	return func(r *Report) float64 { return float64(d(r)) }
}

func integer(n func(*Report) int64) func(*Report) float64 {
	return func(r *Report) float64 { return float64(n(r)) }
}

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
	{"load phase", "load_s", "", unitDur, dur(func(r *Report) time.Duration { return r.Load })},
	{"elapsed with drain", "elapsed_s", "", unitDur, dur(func(r *Report) time.Duration { return r.Elapsed })},
	{"requests completed", "requests_completed", "", unitCount, integer(func(r *Report) int64 { return r.Completed })},
	{"requests cancelled", "requests_cancelled", "", unitCount, integer(func(r *Report) int64 { return r.Cancelled })},
	{"requests stalled", "requests_stalled", "", unitCount, integer(func(r *Report) int64 { return r.Stalled })},
	{"requests cut short", "requests_cut_short", "", unitCount, integer(func(r *Report) int64 { return r.CutShort })},
	{"blocks/s", "blocks_per_s", "higher", unitRate, func(r *Report) float64 { return r.BlockRate }},
	{"messages/s", "messages_per_s", "higher", unitRate, func(r *Report) float64 { return r.MessageRate }},
	{"HAVE+DONT_HAVE/s", "haves_dont_haves_per_s", "higher", unitRate, func(r *Report) float64 { return r.InfoRate }},
	{"latency p50", "latency_p50_s", "lower", unitDur, dur(func(r *Report) time.Duration { return r.LatencyP50 })},
	{"latency p99", "latency_p99_s", "lower", unitDur, dur(func(r *Report) time.Duration { return r.LatencyP99 })},
	{"latency max", "latency_max_s", "lower", unitDur, dur(func(r *Report) time.Duration { return r.LatencyMax })},
	{"blockstore calls", "store_calls", "", unitCount, integer(func(r *Report) int64 { return r.StoreCalls })},
	{"  failed (injected)", "faults_failed", "", unitCount, integer(func(r *Report) int64 { return r.FaultsFailed })},
	{"  stalled (injected)", "faults_stalled", "", unitCount, integer(func(r *Report) int64 { return r.FaultsStalled })},
	{"wants retried", "wants_retried", "", unitCount, integer(func(r *Report) int64 { return r.Retries })},
	{"messages sent again", "messages_resent", "", unitCount, integer(func(r *Report) int64 { return r.Resent })},
	{"goroutines peak", "goroutines_peak", "lower", unitCount, integer(func(r *Report) int64 { return int64(r.GoroutinesPeak) })},
	{"  of the client", "goroutines_peak_client", "lower", unitCount, integer(func(r *Report) int64 { return int64(clientGoroutines(r)) })},
	{"goroutines at end", "goroutines_end", "", unitCount, integer(func(r *Report) int64 { return int64(r.GoroutinesEnd) })},
	{"heap peak (*)", "heap_peak_bytes", "", unitBytes, func(r *Report) float64 { return float64(r.HeapPeak) }},
	{"heap at end (*)", "heap_end_bytes", "", unitBytes, func(r *Report) float64 { return float64(r.HeapEnd) }},
}

// fetchRows are the rows of Notifier.Fetch's outcomes, which a table or a
// JSON output has only if one of its reports fetched (see rowsFor).
var fetchRows = []row{
	{"fetch hits", "fetch_hits", "", unitCount, integer(func(r *Report) int64 { return r.FetchHits })},
	{"fetch requests", "fetch_requests", "", unitCount, integer(func(r *Report) int64 { return r.FetchRequests })},
	{"  block before return", "fetch_early", "", unitCount, integer(func(r *Report) int64 { return r.FetchEarly })},
}

// rowsFor returns the rows of a table of reps: rows, and fetchRows after
// "messages sent again" if one of reps used Notifier.Fetch.
func rowsFor(reps []Report) []row {
	for i := range reps {
		if reps[i].FetchHits+reps[i].FetchRequests > 0 {
			at := slices.IndexFunc(rows, func(rw row) bool { return rw.key == "messages_resent" }) + 1
			return slices.Concat(rows[:at], fetchRows, rows[at:])
		}
	}
	return rows
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
	for _, rw := range rowsFor(reps) {
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
		cells = append(cells, rw.unit.format(rw.value(&reps[i])))
	}
	if ratio {
		switch q, ok := rw.ratio(&reps[0], &reps[1]); {
		case rw.better == "":
			cells = append(cells, "", "")
		case !ok:
			cells = append(cells, "-", rw.better)
		default:
			cells = append(cells, fmt.Sprintf("%.2fx", q), rw.better)
		}
	}
	return cells
}

// ratio returns a's value over b's, and false if b's is 0.
func (rw row) ratio(a, b *Report) (float64, bool) {
	d := rw.value(b)
	if d == 0 {
		return 0, false
	}
	return rw.value(a) / d, true
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
