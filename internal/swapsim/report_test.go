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
	require.Equal(t, []string{"notifier", "legacy"}, got)
	_, err = Impls("bitswap")
	require.Error(t, err)
	_, err = Run(t.Context(), Config{Impl: "bitswap"})
	require.Error(t, err)
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
