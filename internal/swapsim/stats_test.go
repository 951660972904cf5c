package swapsim

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucket_TopBoundsItsValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 100000 {
		v := rng.Uint64N(1 << rng.IntN(50))
		b := bucket(v)
		require.Less(t, b, histBuckets)
		require.LessOrEqual(t, v, bucketTop(b), "v=%d", v)
		if b > 0 {
			require.Greater(t, v, bucketTop(b-1), "v=%d", v)
		}
	}
}

func TestHistogram_Quantiles(t *testing.T) {
	var h histogram
	require.Zero(t, h.quantile(0.5))
	rng := rand.New(rand.NewPCG(2, 2))
	vals := make([]int64, 10000)
	for i := range vals {
		vals[i] = rng.Int64N(int64(50 * time.Millisecond))
		h.record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.99} {
		exact := float64(vals[int(q*float64(len(vals)))-1])
		got := float64(h.quantile(q))
		require.InEpsilon(t, exact, got, 1.0/histSub, "q=%v", q)
	}
	require.Equal(t, time.Duration(vals[len(vals)-1]), h.quantile(1))
}

func TestHistogram_Buckets(t *testing.T) {
	var h histogram
	require.Empty(t, h.buckets())
	for _, v := range []int64{0, 5, 5, 1000, 1001, 1_000_000, 123_456_789} {
		h.record(v)
	}
	bs := h.buckets()
	var n int64
	for i, b := range bs {
		n += b.Count
		if i > 0 {
			require.Greater(t, b.Le, bs[i-1].Le)
		}
	}
	require.Equal(t, int64(7), n)
	require.Equal(t, Bucket{Le: 0, Count: 1}, bs[0])
	require.Equal(t, Bucket{Le: 5, Count: 2}, bs[1])
	require.Equal(t, Bucket{Le: 123_456_789, Count: 1}, bs[len(bs)-1], "the last bound is the max")
	require.Equal(t, Bucket{Le: h.quantile(0.5), Count: 2}, bs[2], "1000 and 1001 share the median's bucket")
}

func TestReport_BlockRates(t *testing.T) {
	r := Report{Series: []Sample{
		{At: 100 * time.Millisecond, Blocks: 50},
		{At: 300 * time.Millisecond, Blocks: 250},
		{At: 400 * time.Millisecond, Blocks: 250},
	}}
	require.Equal(t, []Rate{
		{At: 100 * time.Millisecond, PerSec: 500},
		{At: 300 * time.Millisecond, PerSec: 1000},
		{At: 400 * time.Millisecond, PerSec: 0},
	}, r.BlockRates())
	require.Empty(t, (&Report{}).BlockRates())
}

// A tick that comes right after a late one adds no sample; the last sample
// replaces a sample that close instead.
func TestMonitor_RecordKeepsIntervalsLong(t *testing.T) {
	cfg := DefaultConfig()
	m := newMonitor(&sim{cfg: &cfg})
	m.start = time.Now().Add(-sampleEvery)
	m.s.ctr.blocks.Store(10)
	m.record(false)
	m.s.ctr.blocks.Store(20)
	m.record(false) // microseconds later: dropped
	require.Len(t, m.series, 1)
	require.Equal(t, int64(10), m.series[0].Blocks)
	m.record(true) // the last: replaces
	require.Len(t, m.series, 1)
	require.Equal(t, int64(20), m.series[0].Blocks)
	m.start = m.start.Add(-sampleEvery)
	m.s.ctr.blocks.Store(30)
	m.record(true)
	require.Len(t, m.series, 2)
	require.Equal(t, int64(30), m.series[1].Blocks)
}
