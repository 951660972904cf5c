package swapsim

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
)

// JSONSchema names the layout WriteJSON writes. It changes only if a field is
// renamed, removed or changes meaning; fields may be added without a change.
const JSONSchema = "swapsim/v1"

// WriteJSON writes the reports, with every figure of WriteTable, the latency
// histogram and the blocks/s series, as one JSON object for scripts and CI
// jobs to compare runs. cfg is the load as given (with -impl both, each
// report ran half of cfg.Duration: its load_s says how long). The layout:
//
//	{
//	  "schema": "swapsim/v1",
//	  "config": {"duration_s": 10, "seed": 1, "sessions": 48, ...},
//	  "runs": [{
//	    "impl": "notifier", "store": "mem",
//	    "metrics": {"load_s": 5.0, ..., "blocks_per_s": 61234.5, ...},
//	    "violations": {"total": 0, "lost_block": 0, ...},
//	    "counts": {"requests": 2301, "blocks": 306172, ...},
//	    "examples": ["..."],
//	    "latency_histogram": [{"le_s": 0.000512, "count": 17}, ...],
//	    "blocks_series": [{"t_s": 0.1, "blocks": 6021, "blocks_per_s": 60210}, ...]
//	  }, ...],
//	  "ratios": {"of": "notifier", "to": "legacy",
//	             "values": {"blocks_per_s": 1.31, ...}, "better": {"blocks_per_s": "higher", ...}}
//	}
//
// metrics holds the table's rows, in its order; a key's suffix is its unit
// (_s seconds, _per_s per second of the load phase, _bytes; none: a count):
// load_s, elapsed_s (with the drain), requests_completed,
// requests_cancelled, requests_stalled, requests_cut_short (Report.CutShort),
// blocks_per_s, messages_per_s,
// haves_dont_haves_per_s, latency_p50_s, latency_p99_s, latency_max_s,
// store_calls (the client's blockstore calls), faults_failed and
// faults_stalled (those Config.Faults failed or stalled), wants_retried (after
// a failed blockstore check), messages_resent (after a failed store),
// goroutines_peak, goroutines_peak_client ("of the client"),
// goroutines_end, heap_peak_bytes, heap_end_bytes; and, after
// messages_resent, only if a report used Notifier.Fetch (notifier-fetch):
// fetch_hits, fetch_requests and fetch_early (Report.FetchHits,
// FetchRequests, FetchEarly). violations has the
// table's VIOLATIONS rows: total, then each kind named as in the table with
// underscores for spaces (lost_block, ..., client_error). counts holds the
// Report's other tallies: requests, blocks, haves, dont_haves, messages,
// wants, dropped, local_adds, unsolicited, goroutines.before and .sim.
// examples are the first violations, as printed. latency_histogram has the
// non-empty buckets (16 per power of two) of every delivery's latency:
// count deliveries took at most le_s and more than the previous bucket's
// le_s; the counts add up to counts.blocks. blocks_series has, about every
// 100ms from the start of the load to the end of the drain, the blocks
// delivered so far and the rate of the interval that ends at t_s. ratios,
// written only with two reports, holds the table's first/second column for
// the rows that have one, null where the second is 0 (the table's "-"),
// and which of higher or lower is better.
func WriteJSON(w io.Writer, cfg Config, reps ...Report) error {
	out := jsonOutput{Schema: JSONSchema, Config: newJSONConfig(&cfg), Runs: make([]jsonRun, 0, len(reps))}
	table := rowsFor(reps)
	for i := range reps {
		out.Runs = append(out.Runs, newJSONRun(&reps[i], table))
	}
	if len(reps) == 2 {
		out.Ratios = newJSONRatios(&reps[0], &reps[1])
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

type jsonOutput struct {
	Schema string      `json:"schema"`
	Config jsonConfig  `json:"config"`
	Runs   []jsonRun   `json:"runs"`
	Ratios *jsonRatios `json:"ratios,omitempty"`
}

// jsonConfig is the load, named as its flags are.
type jsonConfig struct {
	Duration    float64 `json:"duration_s"`
	Seed        uint64  `json:"seed"`
	Sessions    int     `json:"sessions"`
	Peers       int     `json:"peers"`
	WantPeers   int     `json:"want_peers"`
	MinLatency  float64 `json:"latency_min_s"`
	MaxLatency  float64 `json:"latency_max_s"`
	Depth       int     `json:"depth"`
	Fanout      int     `json:"fanout"`
	BlockSize   int     `json:"block_size"`
	Share       float64 `json:"share"`
	Refetch     float64 `json:"refetch"`
	Cancel      float64 `json:"cancel"`
	LocalAdd    float64 `json:"local"`
	LocalOnly   float64 `json:"local_only"`
	DupBlock    float64 `json:"dup"`
	Unsolicited float64 `json:"unsolicited"`
	LocalJitter float64 `json:"local_jitter_s"`
	Stall       float64 `json:"stall_s"`
	Faults      float64 `json:"faults"`
	FaultStall  float64 `json:"fault_stall_s"`
	Store       string  `json:"store"`
}

func newJSONConfig(c *Config) jsonConfig {
	return jsonConfig{
		Duration: c.Duration.Seconds(), Seed: c.Seed,
		Sessions: c.Sessions, Peers: c.Peers, WantPeers: c.WantPeers,
		MinLatency: c.MinLatency.Seconds(), MaxLatency: c.MaxLatency.Seconds(),
		Depth: c.Depth, Fanout: c.Fanout, BlockSize: c.BlockSize,
		Share: c.Share, Refetch: c.Refetch, Cancel: c.Cancel, LocalAdd: c.LocalAdd,
		LocalOnly: c.LocalOnly, DupBlock: c.DupBlock, Unsolicited: c.Unsolicited,
		LocalJitter: c.LocalJitter.Seconds(), Stall: c.Stall.Seconds(),
		Faults: c.Faults, FaultStall: c.FaultStall.Seconds(), Store: c.Store,
	}
}

type jsonRun struct {
	Impl       string              `json:"impl"`
	Store      string              `json:"store"`
	Metrics    orderedMap[float64] `json:"metrics"`
	Violations orderedMap[int64]   `json:"violations"`
	Counts     jsonCounts          `json:"counts"`
	Examples   []string            `json:"examples"`
	Latency    []jsonBucket        `json:"latency_histogram"`
	Series     []jsonSample        `json:"blocks_series"`
}

// jsonCounts are the Report's tallies that the table leaves out.
type jsonCounts struct {
	Requests    int64 `json:"requests"`
	Blocks      int64 `json:"blocks"`
	Haves       int64 `json:"haves"`
	DontHaves   int64 `json:"dont_haves"`
	Messages    int64 `json:"messages"`
	Wants       int64 `json:"wants"`
	Dropped     int64 `json:"dropped"`
	LocalAdds   int64 `json:"local_adds"`
	Unsolicited int64 `json:"unsolicited"`
	Goroutines  struct {
		Before int `json:"before"`
		Sim    int `json:"sim"`
	} `json:"goroutines"`
}

type jsonBucket struct {
	Le    float64 `json:"le_s"`
	Count int64   `json:"count"`
}

type jsonSample struct {
	At     float64 `json:"t_s"`
	Blocks int64   `json:"blocks"`
	PerSec float64 `json:"blocks_per_s"`
}

type jsonRatios struct {
	Of     string               `json:"of"`
	To     string               `json:"to"`
	Values orderedMap[*float64] `json:"values"`
	Better orderedMap[string]   `json:"better"`
}

// newJSONRun returns r as written in JSON, with the figures of the table's
// rows table.
func newJSONRun(r *Report, table []row) jsonRun {
	run := jsonRun{Impl: r.Impl, Store: r.Store, Examples: r.Examples}
	if run.Examples == nil {
		run.Examples = []string{}
	}
	for _, rw := range table {
		run.Metrics.add(rw.key, rw.unit.json(rw.value(r)))
	}
	run.Violations.add("total", r.TotalViolations())
	for v := range numViolations {
		run.Violations.add(v.key(), r.Violations[v])
	}
	run.Counts = jsonCounts{
		Requests: r.Requests, Blocks: r.Blocks, Haves: r.Haves, DontHaves: r.DontHaves,
		Messages: r.Messages, Wants: r.Wants, Dropped: r.Dropped,
		LocalAdds: r.LocalAdds, Unsolicited: r.Unsolicited,
	}
	run.Counts.Goroutines.Before, run.Counts.Goroutines.Sim = r.GoroutinesBefore, r.GoroutinesSim
	run.Latency = make([]jsonBucket, len(r.Latency))
	for i, b := range r.Latency {
		run.Latency[i] = jsonBucket{Le: b.Le.Seconds(), Count: b.Count}
	}
	run.Series = make([]jsonSample, len(r.Series))
	for i, rate := range r.BlockRates() {
		run.Series[i] = jsonSample{At: rate.At.Seconds(), Blocks: r.Series[i].Blocks, PerSec: rate.PerSec}
	}
	return run
}

func newJSONRatios(a, b *Report) *jsonRatios {
	rs := &jsonRatios{Of: a.Impl, To: b.Impl}
	for _, rw := range rows {
		if rw.better == "" {
			continue
		}
		var v *float64
		if q, ok := rw.ratio(a, b); ok {
			v = &q
		}
		rs.Values.add(rw.key, v)
		rs.Better.add(rw.key, rw.better)
	}
	return rs
}

// key names v in JSON: its name with underscores for spaces.
func (v Violation) key() string { return strings.ReplaceAll(v.String(), " ", "_") }

// orderedMap is a JSON object that keeps its keys in the order added (a Go
// map would be written sorted), so that metrics read in the table's order.
type orderedMap[V any] struct {
	keys []string
	vals []V
}

func (m *orderedMap[V]) add(k string, v V) {
	m.keys = append(m.keys, k)
	m.vals = append(m.vals, v)
}

func (m orderedMap[V]) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := json.Marshal(m.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
