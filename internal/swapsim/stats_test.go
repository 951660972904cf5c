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
