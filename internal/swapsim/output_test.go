package swapsim

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bothReports runs the small load on both implementations, once for all the
// tests of this file.
var bothReports = sync.OnceValues(func() ([]Report, error) {
	var reps []Report
	for _, impl := range []string{"notifier", "legacy"} {
		cfg := smallConfig(impl)
		cfg.Stall = 300 * time.Millisecond // legacy may lose blocks; do not wait long for them
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep)
	}
	return reps, nil
})

func runBoth(t *testing.T) []Report {
	t.Helper()
	reps, err := bothReports()
	require.NoError(t, err)
	return reps
}

// jsonDoc is what a script reads from WriteJSON's output.
type jsonDoc struct {
	Schema string         `json:"schema"`
	Config map[string]any `json:"config"`
	Runs   []struct {
		Impl       string             `json:"impl"`
		Store      string             `json:"store"`
		Metrics    map[string]float64 `json:"metrics"`
		Violations map[string]int64   `json:"violations"`
		Counts     map[string]any     `json:"counts"`
		Examples   []string           `json:"examples"`
		Latency    []struct {
			Le    float64 `json:"le_s"`
			Count int64   `json:"count"`
		} `json:"latency_histogram"`
		Series []struct {
			At     float64 `json:"t_s"`
			Blocks int64   `json:"blocks"`
			PerSec float64 `json:"blocks_per_s"`
		} `json:"blocks_series"`
	} `json:"runs"`
	Ratios *struct {
		Of     string              `json:"of"`
		To     string              `json:"to"`
		Values map[string]*float64 `json:"values"`
		Better map[string]string   `json:"better"`
	} `json:"ratios"`
}

func writeJSON(t *testing.T, cfg Config, reps ...Report) (jsonDoc, []byte) {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, WriteJSON(&b, cfg, reps...))
	var doc jsonDoc
	dec := json.NewDecoder(bytes.NewReader(b.Bytes()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&doc), "%s", b.String())
	return doc, b.Bytes()
}

// metricsOf lists the table's figures of r under their JSON keys, from the
// Report's fields: the schema, written out.
func metricsOf(r *Report) map[string]float64 {
	return map[string]float64{
		"load_s":                 r.Load.Seconds(),
		"elapsed_s":              r.Elapsed.Seconds(),
		"requests_completed":     float64(r.Completed),
		"requests_cancelled":     float64(r.Cancelled),
		"requests_stalled":       float64(r.Stalled),
		"requests_cut_short":     float64(r.CutShort),
		"blocks_per_s":           r.BlockRate,
		"messages_per_s":         r.MessageRate,
		"haves_dont_haves_per_s": r.InfoRate,
		"latency_p50_s":          r.LatencyP50.Seconds(),
		"latency_p99_s":          r.LatencyP99.Seconds(),
		"latency_max_s":          r.LatencyMax.Seconds(),
		"store_calls":            float64(r.StoreCalls),
		"faults_failed":          float64(r.FaultsFailed),
		"faults_stalled":         float64(r.FaultsStalled),
		"wants_retried":          float64(r.Retries),
		"messages_resent":        float64(r.Resent),
		"goroutines_peak":        float64(r.GoroutinesPeak),
		"goroutines_peak_client": float64(max(0, r.GoroutinesPeak-r.GoroutinesSim-r.GoroutinesBefore)),
		"goroutines_end":         float64(r.GoroutinesEnd),
		"heap_peak_bytes":        float64(r.HeapPeak),
		"heap_end_bytes":         float64(r.HeapEnd),
	}
}

func TestWriteJSON_HoldsTheTablesFigures(t *testing.T) {
	reps := runBoth(t)
	cfg := smallConfig("notifier")
	doc, raw := writeJSON(t, cfg, reps...)

	require.Equal(t, "swapsim/v1", doc.Schema)
	require.InDelta(t, cfg.Duration.Seconds(), doc.Config["duration_s"], 0)
	require.InDelta(t, float64(cfg.Sessions), doc.Config["sessions"], 0)
	require.Equal(t, cfg.Store, doc.Config["store"])
	require.Len(t, doc.Runs, 2)
	for i := range reps {
		r, run := &reps[i], doc.Runs[i]
		require.Equal(t, r.Impl, run.Impl)
		require.Equal(t, r.Store, run.Store)
		require.Equal(t, metricsOf(r), run.Metrics, r.Impl)
		require.Equal(t, r.TotalViolations(), run.Violations["total"])
		require.Len(t, run.Violations, int(numViolations)+1)
		require.Equal(t, r.Violations[LostBlock], run.Violations["lost_block"])
		require.Equal(t, r.Violations[StaleCancel], run.Violations["stale_cancel"])
		require.Equal(t, len(r.Examples), len(run.Examples))
		require.InDelta(t, float64(r.Blocks), run.Counts["blocks"], 0)
		require.InDelta(t, float64(r.Requests), run.Counts["requests"], 0)
	}
	require.NotNil(t, doc.Ratios)
	require.Equal(t, "notifier", doc.Ratios.Of)
	require.Equal(t, "legacy", doc.Ratios.To)
	require.Equal(t, "higher", doc.Ratios.Better["blocks_per_s"])
	require.Equal(t, "lower", doc.Ratios.Better["latency_p99_s"])
	require.InEpsilon(t, reps[0].BlockRate/reps[1].BlockRate, *doc.Ratios.Values["blocks_per_s"], 1e-12)

	// The metrics come in the table's order.
	require.Equal(t, rowKeys(), objectKeys(t, raw, `"metrics"`))
}

// The printed table, rebuilt from the JSON alone, is the table WriteTable
// prints: every figure, ratio and violation count.
func TestWriteJSON_RebuildsThePrintedTable(t *testing.T) {
	reps := runBoth(t)
	doc, _ := writeJSON(t, smallConfig("notifier"), reps...)
	var table strings.Builder
	require.NoError(t, WriteTable(&table, reps...))

	for _, rw := range rows {
		cells := []string{regexp.QuoteMeta(rw.name)}
		for _, run := range doc.Runs {
			v, ok := run.Metrics[rw.key]
			require.True(t, ok, "%s: no %q in the JSON", run.Impl, rw.key)
			if rw.unit == unitDur {
				v = math.Round(v * float64(time.Second))
			}
			cells = append(cells, regexp.QuoteMeta(rw.unit.format(v)))
		}
		if rw.better != "" {
			q, ok := doc.Ratios.Values[rw.key]
			require.True(t, ok, rw.key)
			ratio := "-"
			if q != nil {
				ratio = fmt.Sprintf("%.2fx", *q)
			}
			cells = append(cells, regexp.QuoteMeta(ratio), doc.Ratios.Better[rw.key])
		}
		require.Regexp(t, "(?m)^"+strings.Join(cells, " +")+" *$", table.String())
	}
	cells := []string{"VIOLATIONS"}
	for _, run := range doc.Runs {
		cells = append(cells, fmt.Sprint(run.Violations["total"]))
	}
	require.Regexp(t, "(?m)^"+strings.Join(cells, " +")+" *$", table.String())
	for v := range numViolations {
		cells := []string{"  " + v.String()}
		for _, run := range doc.Runs {
			n, ok := run.Violations[v.key()]
			require.True(t, ok, v.key())
			cells = append(cells, fmt.Sprint(n))
		}
		require.Regexp(t, "(?m)^"+strings.Join(cells, " +")+" *$", table.String())
	}
}

func TestWriteJSON_HistogramAndSeries(t *testing.T) {
	reps := runBoth(t)
	doc, _ := writeJSON(t, smallConfig("notifier"), reps...)
	for i := range reps {
		r, run := &reps[i], doc.Runs[i]

		require.NotEmpty(t, run.Latency, r.Impl)
		var n int64
		for j, b := range run.Latency {
			n += b.Count
			require.Positive(t, b.Count)
			if j > 0 {
				require.Greater(t, b.Le, run.Latency[j-1].Le)
			}
		}
		require.Equal(t, r.Blocks, n, "%s: every delivery is in the histogram", r.Impl)
		require.InDelta(t, r.LatencyMax.Seconds(), run.Latency[len(run.Latency)-1].Le, 0)

		require.Len(t, run.Series, len(r.Series), r.Impl)
		require.NotEmpty(t, run.Series, r.Impl)
		var prevAt float64
		var prevBlocks int64
		for _, s := range run.Series {
			require.Greater(t, s.At, prevAt)
			require.GreaterOrEqual(t, s.Blocks, prevBlocks)
			require.InDelta(t, float64(s.Blocks-prevBlocks)/(s.At-prevAt), s.PerSec, 1e-6*max(s.PerSec, 1))
			prevAt, prevBlocks = s.At, s.Blocks
		}
		last := run.Series[len(run.Series)-1]
		require.Equal(t, r.Blocks, last.Blocks, "%s: the last sample is after the drain", r.Impl)
		require.GreaterOrEqual(t, last.At, r.Load.Seconds())
	}
}

func TestWriteJSON_OneReportAndZeroRatios(t *testing.T) {
	a := Report{Impl: "notifier", BlockRate: 10, LatencyP50: time.Millisecond}
	doc, raw := writeJSON(t, DefaultConfig(), a)
	require.Nil(t, doc.Ratios)
	require.NotContains(t, string(raw), `"ratios"`)
	require.Empty(t, doc.Runs[0].Latency)
	require.Empty(t, doc.Runs[0].Series)
	require.NotNil(t, doc.Runs[0].Examples, "examples is [], not null")
	require.InDelta(t, 0.001, doc.Runs[0].Metrics["latency_p50_s"], 0)

	doc, _ = writeJSON(t, DefaultConfig(), a, Report{Impl: "legacy", BlockRate: 5})
	require.InDelta(t, 2.0, *doc.Ratios.Values["blocks_per_s"], 0)
	v, ok := doc.Ratios.Values["latency_p50_s"]
	require.True(t, ok)
	require.Nil(t, v, "the table's '-': the second report's value is 0")
	require.NotContains(t, doc.Ratios.Values, "load_s", "no ratio where the table has none")
}

func TestWritePlot_SVG(t *testing.T) {
	reps := runBoth(t)
	var b bytes.Buffer
	require.NoError(t, WritePlot(&b, "svg", smallConfig("notifier"), reps...))
	texts := svgTexts(t, b.Bytes())
	require.NotContains(t, b.String(), "font-family:Liberation Sans;", "every text has fallback faces")
	require.Contains(t, texts, "Delivery latency, per block")
	require.Contains(t, texts, "Blocks delivered per second")
	for _, impl := range []string{"notifier", "legacy"} {
		require.True(t, hasPrefix(texts, impl+": p50 "), "%s in the latency legend: %q", impl, texts)
	}
	require.True(t, hasPrefix(texts, "notifier: "+count(reps[0].BlockRate)+" blocks/s"), "%q", texts)
	require.True(t, hasPrefix(texts, "legacy: "+count(reps[1].BlockRate)+" blocks/s"), "%q", texts)
	require.Contains(t, texts, "latency (log scale)")
	require.True(t, hasPrefix(texts, "blocks/s (mean over "), "%q", texts)
}

func TestWritePlot_PNG(t *testing.T) {
	reps := runBoth(t)
	dpi := pngDPI
	pngDPI = 36 // a quarter of the resolution, a sixteenth of the time
	t.Cleanup(func() { pngDPI = dpi })
	var b bytes.Buffer
	require.NoError(t, WritePlot(&b, "png", smallConfig("notifier"), reps...))
	img, err := png.Decode(&b)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 360, 151), img.Bounds())
	// Both implementations' lines are drawn: blue and red pixels, blended
	// with the white background where the line is thinner than a pixel.
	var blue, red int
	for y := range img.Bounds().Dy() {
		for x := range img.Bounds().Dx() {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			r, g, b := int(c.R), int(c.G), int(c.B)
			switch {
			case b > r+40:
				blue++
			case r > g+40 && r > b+40:
				red++
			}
		}
	}
	// The legend's two samples of each are some 20 pixels; a line, hundreds.
	require.Greater(t, blue, 100, "notifier's lines")
	require.Greater(t, red, 100, "legacy's lines")
}

func TestWritePlot_Errors(t *testing.T) {
	reps := runBoth(t)
	require.ErrorContains(t, WritePlot(io.Discard, "pdf", DefaultConfig(), reps...), `"pdf"`)
	require.Error(t, WritePlot(failingWriter{}, "svg", DefaultConfig(), reps...))
	// Nothing delivered: still a picture, with empty axes.
	var empty bytes.Buffer
	require.NoError(t, WritePlot(&empty, "svg", DefaultConfig(), Report{Impl: "notifier"}))
	require.Contains(t, svgTexts(t, empty.Bytes()), "Delivery latency, per block")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// svgTexts parses an SVG document and returns the text of its <text>
// elements; it fails the test unless the document is well-formed XML with
// an <svg> root.
func svgTexts(t *testing.T, doc []byte) []string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var texts []string
	var root string
	inText := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			if tok.Name.Local == "text" {
				inText = true
				texts = append(texts, "")
			}
		case xml.EndElement:
			if tok.Name.Local == "text" {
				inText = false
			}
		case xml.CharData:
			if inText {
				texts[len(texts)-1] += string(tok)
			}
		}
	}
	require.Equal(t, "svg", root)
	return texts
}

func hasPrefix(texts []string, prefix string) bool {
	for _, s := range texts {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func rowKeys() []string {
	keys := make([]string, len(rows))
	for i, rw := range rows {
		keys[i] = rw.key
	}
	return keys
}

// objectKeys returns, in order, the keys of the first object that follows
// field in raw JSON.
func objectKeys(t *testing.T, raw []byte, field string) []string {
	t.Helper()
	i := bytes.Index(raw, []byte(field))
	require.GreaterOrEqual(t, i, 0, field)
	rest := bytes.TrimLeft(raw[i+len(field):], ": \t\n")
	dec := json.NewDecoder(bytes.NewReader(rest))
	var keys []string
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		keys = append(keys, tok.(string))
		var v any
		require.NoError(t, dec.Decode(&v))
	}
	return keys
}
