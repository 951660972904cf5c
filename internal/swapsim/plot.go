package swapsim

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Size of the picture WritePlot draws.
const (
	plotWidth  = 10 * vg.Inch
	plotHeight = 4.2 * vg.Inch
)

// pngDPI is the resolution of the PNG (a variable for the tests, which draw
// a coarse one: rasterizing takes seconds with the race detector).
var pngDPI = 144

// WritePlot draws the reports side by side in one picture, in format "svg"
// or "png": on the left the distribution (CDF) of the delivery latency, on a
// log scale, on the right the blocks delivered per second over time, one line
// per report, each named by its implementation. cfg is the load as given; a
// line above the plots describes it.
func WritePlot(w io.Writer, format string, cfg Config, reps ...Report) error {
	var c vg.CanvasWriterTo
	switch format {
	case "svg":
		c = vgsvg.New(plotWidth, plotHeight)
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(plotWidth, plotHeight), vgimg.UseDPI(pngDPI))}
	default:
		return fmt.Errorf("swapsim: plot format %q: want svg or png", format)
	}
	lat, err := latencyPlot(reps)
	if err != nil {
		return err
	}
	rate, err := ratePlot(reps)
	if err != nil {
		return err
	}
	dc := draw.New(c)
	dc.FillPolygon(color.White, []vg.Point{dc.Min, {X: dc.Max.X, Y: dc.Min.Y}, dc.Max, {X: dc.Min.X, Y: dc.Max.Y}})
	head := plot.New().Title.TextStyle
	sans(&head)
	head.Font.Size = 11
	head.XAlign, head.YAlign = draw.XLeft, draw.YTop // see sans: anchored at its start
	dc.FillText(head, vg.Point{X: dc.Min.X + 12, Y: dc.Max.Y - 6}, describe(&cfg, reps))
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadTop: 28, PadBottom: 6, PadLeft: 6, PadRight: 12, PadX: 30}
	plots := [][]*plot.Plot{{lat, rate}}
	for i, cv := range plot.Align(plots, tiles, dc)[0] {
		plots[0][i].Draw(cv)
	}
	if format != "svg" {
		_, err = c.WriteTo(w)
		return err
	}
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return err
	}
	_, err = w.Write(bytes.ReplaceAll(b.Bytes(), []byte("font-family:Liberation Sans;"), []byte(svgFonts)))
	return err
}

// svgFonts names, after the face the text was laid out with, faces of the
// same metrics, for viewers that lack it (the SVG does not embed it).
const svgFonts = "font-family:'Liberation Sans',Arial,Helvetica,sans-serif;"

// describe is the line above the plots.
func describe(c *Config, reps []Report) string {
	s := fmt.Sprintf("swapsim: %d sessions, %d peers, latency %v..%v, store %s, seed %d",
		c.Sessions, c.Peers, c.MinLatency, c.MaxLatency, c.Store, c.Seed)
	if len(reps) > 0 {
		s += fmt.Sprintf("; load phase %v per implementation", reps[0].Load.Round(100*time.Millisecond))
	}
	return s
}

// implColor gives each implementation its color in every plot.
func implColor(impl string, i int) color.Color {
	switch impl {
	case "notifier":
		return color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	case "legacy":
		return color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} // red
	}
	return color.Gray{Y: uint8(80 * (i % 3))}
}

// newPlot makes a plot with a sans-serif face, a grid and the given labels.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	for _, st := range []*draw.TextStyle{
		&p.Title.TextStyle, &p.X.Label.TextStyle, &p.Y.Label.TextStyle,
		&p.X.Tick.Label, &p.Y.Tick.Label, &p.Legend.TextStyle,
	} {
		sans(st)
	}
	p.Title.TextStyle.Font.Size = 13
	p.Legend.TextStyle.Font.Size = 10
	p.Legend.ThumbnailWidth = 0.3 * vg.Inch
	p.Add(plotter.NewGrid())
	return p
}

// sans sets st's face to Liberation Sans, which is metric-compatible with
// Arial and Helvetica: an SVG viewer without it lays the text out alike. Text
// is placed for its metrics (an SVG <text> is anchored at its start), so the
// legends are on the left, their text after the lines: a wider face, where
// none of those is installed, runs further right, not into the lines.
func sans(st *draw.TextStyle) {
	st.Font.Typeface, st.Font.Variant = "Liberation", "Sans"
}

// addLine adds a line of xys to p, in the implementation's color, and names it
// in the legend.
func addLine(p *plot.Plot, xys plotter.XYs, c color.Color, name string) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color, l.Width = c, 1.6
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// latencyPlot is the CDF of the delivery latency: for each bucket of the
// histogram, the share of the deliveries that took at most its bound.
func latencyPlot(reps []Report) (*plot.Plot, error) {
	p := newPlot("Delivery latency, per block", "latency (log scale)", "share of blocks delivered within")
	p.Legend.Top, p.Legend.Left = true, true // in the headroom above 100%
	p.Legend.XOffs, p.Legend.YOffs = 6, -4
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range reps {
		r := &reps[i]
		var total int64
		for _, b := range r.Latency {
			total += b.Count
		}
		xys := make(plotter.XYs, 0, len(r.Latency))
		var cum int64
		for _, b := range r.Latency {
			cum += b.Count
			x := max(b.Le, time.Nanosecond).Seconds()
			xys = append(xys, plotter.XY{X: x, Y: float64(cum) / float64(total)})
			lo, hi = min(lo, x), max(hi, x)
		}
		if len(xys) == 0 {
			continue
		}
		name := fmt.Sprintf("%s: p50 %s, p99 %s", r.Impl, fmtDur(float64(r.LatencyP50)), fmtDur(float64(r.LatencyP99)))
		if err := addLine(p, xys, implColor(r.Impl, i), name); err != nil {
			return nil, err
		}
	}
	if lo > hi { // nothing delivered
		lo, hi = 1e-6, 1e-3
	}
	p.X.Scale = plot.LogScale{}
	p.X.Min, p.X.Max = lo/1.25, hi*1.25
	p.X.Tick.Marker = plot.TickerFunc(durationLogTicks)
	p.Y.Min, p.Y.Max = 0, 1.2
	p.Y.Tick.Marker = plot.ConstantTicks{
		{Value: 0, Label: "0"},
		{Value: 0.25, Label: "25%"},
		{Value: 0.5, Label: "50%"},
		{Value: 0.75, Label: "75%"},
		{Value: 0.9, Label: "90%"},
		{Value: 1, Label: "100%"},
	}
	return p, nil
}

// durationLogTicks labels each power of ten (seconds) as a duration, and 2
// and 5 times it as well if the axis spans three at most; it marks the other
// multiples.
func durationLogTicks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	e0, e1 := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	for e := e0; e <= e1; e++ {
		for m := 1; m < 10; m++ {
			v := float64(m) * math.Pow10(e)
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (m == 2 || m == 5) && e1-e0 <= 3 {
				t.Label = time.Duration(math.Round(v * float64(time.Second))).String()
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// ratePlot is the blocks delivered per second over windows of a few samples
// (a twentieth of the load phase), with the end of each load phase marked.
func ratePlot(reps []Report) (*plot.Plot, error) {
	p := newPlot("Blocks delivered per second", "time since the start of its load (s)", "")
	p.Legend.Top, p.Legend.Left = true, true // in the headroom above the lines
	p.Legend.XOffs, p.Legend.YOffs = 6, -4
	var ends []time.Duration
	top := 0.0
	for i := range reps {
		r := &reps[i]
		k := max(1, int(math.Round(float64(r.Load)/20/float64(sampleEvery))))
		if i == 0 {
			p.Y.Label.Text = fmt.Sprintf("blocks/s (mean over %v)", time.Duration(k)*sampleEvery)
		}
		xys := make(plotter.XYs, 0, len(r.Series)/k+1)
		var prev Sample
		for j, s := range r.Series {
			if (j+1)%k != 0 && j != len(r.Series)-1 {
				continue
			}
			if dt := s.At - prev.At; dt > 0 {
				y := float64(s.Blocks-prev.Blocks) / dt.Seconds()
				xys = append(xys, plotter.XY{X: s.At.Seconds(), Y: y})
				top = max(top, y)
			}
			prev = s
		}
		name := fmt.Sprintf("%s: %s blocks/s over the load phase", r.Impl, count(r.BlockRate))
		if err := addLine(p, xys, implColor(r.Impl, i), name); err != nil {
			return nil, err
		}
		if end := r.Load.Round(10 * time.Millisecond); r.Load > 0 && !slices.Contains(ends, end) {
			ends = append(ends, end)
		}
	}
	p.Y.Min, p.Y.Max = 0, max(top*1.35, 1)
	p.Y.Tick.Marker = plot.TickerFunc(plainTicks)
	for i, end := range ends {
		x := end.Seconds()
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: p.Y.Max}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width, l.Dashes = color.Gray{Y: 110}, 1, []vg.Length{4, 3}
		p.Add(l)
		if i == 0 {
			p.Legend.Add("end of the load phase (drain after it)", l)
		}
	}
	p.X.Min = 0
	p.X.Tick.Marker = plot.TickerFunc(plainTicks)
	return p, nil
}

// plainTicks are plot's default ticks, labelled 2.5 rather than 2.50 and
// 20k rather than 20000.
func plainTicks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		switch v := ticks[i].Value; {
		case ticks[i].Label == "":
		case v >= 1000:
			ticks[i].Label = strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
		default:
			ticks[i].Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ticks
}
