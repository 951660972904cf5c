package swapsim

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWriteTable_Ratios(t *testing.T) {
	a := Report{Impl: "notifier", Elapsed: time.Second, BlockRate: 2000, LatencyP50: time.Millisecond}
	b := Report{Impl: "legacy", Elapsed: time.Second, BlockRate: 1000, LatencyP50: 4 * time.Millisecond}
	b.Violations[StaleCancel] = 3
	var out strings.Builder
	require.NoError(t, WriteTable(&out, a, b))
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^metric +notifier +legacy +notifier/legacy +better`, lines[0])
	require.Regexp(t, `(?m)^blocks/s +2000 +1000 +2\.00x +higher`, out.String())
	require.Regexp(t, `(?m)^latency p50 +1ms +4ms +0\.25x +lower`, out.String())
	require.Regexp(t, `(?m)^VIOLATIONS +0 +3`, out.String())
	require.Regexp(t, `(?m)^  stale cancel +0 +3`, out.String())
}

func TestWriteTable_OneReportHasNoRatio(t *testing.T) {
	var out strings.Builder
	require.NoError(t, WriteTable(&out, Report{Impl: "legacy", Elapsed: time.Second}))
	require.NotContains(t, out.String(), "better")
}

func TestImpls(t *testing.T) {
	got, err := Impls("both")
	require.NoError(t, err)
	require.Equal(t, []string{"notifier", "legacy"}, got, "both stays the notifier beside legacy")
	for _, name := range []string{"notifier", "notifier-fetch", "legacy", "compat"} {
		got, err := Impls(name)
		require.NoError(t, err)
		require.Equal(t, []string{name}, got)
	}
	for name := range factories {
		require.Contains(t, implNames, name, "the error lists every implementation")
	}
	require.True(t, Fatal("notifier-fetch"))
	require.True(t, Fatal("compat"))
	require.False(t, Fatal("legacy"))
	_, err = Impls("bitswap")
	require.Error(t, err)
	_, err = Run(t.Context(), Config{Impl: "bitswap"})
	require.Error(t, err)
}

// The rows of Fetch's outcomes appear, in the table and in JSON, only when
// a report fetched: the output of the other implementations is unchanged.
func TestWriteTable_FetchRowsOnlyWhenFetched(t *testing.T) {
	var out strings.Builder
	require.NoError(t, WriteTable(&out, Report{Impl: "notifier"}, Report{Impl: "legacy"}))
	require.NotContains(t, out.String(), "fetch hits")
	out.Reset()
	require.NoError(t, WriteTable(&out, Report{Impl: "notifier-fetch", FetchHits: 3, FetchRequests: 5, FetchEarly: 1}))
	require.Regexp(t, `(?m)^messages sent again +0 *\nfetch hits +3 *\nfetch requests +5 *\n  block before return +1 *\ngoroutines peak`, out.String())

	doc, _ := writeJSON(t, DefaultConfig(), Report{Impl: "notifier"})
	require.NotContains(t, doc.Runs[0].Metrics, "fetch_hits")
	doc, _ = writeJSON(t, DefaultConfig(), Report{Impl: "notifier-fetch", FetchHits: 3, FetchRequests: 5, FetchEarly: 1})
	require.Equal(t, []float64{3, 5, 1}, []float64{
		doc.Runs[0].Metrics["fetch_hits"], doc.Runs[0].Metrics["fetch_requests"], doc.Runs[0].Metrics["fetch_early"],
	})
}

func TestConfig_Validate(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.Peers, cfg.Cancel, cfg.Store = 65, 2, "leveldb"
	err := cfg.Validate()
	require.ErrorContains(t, err, "peers 65")
	require.ErrorContains(t, err, "cancel 2")
	require.ErrorContains(t, err, `store "leveldb"`)
}
