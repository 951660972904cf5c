package swapsim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultConfig is smallConfig with a share of the blockstore calls failing or
// stalling: enough, in a run this short, to meet every kind of fault and
// recovery many times.
func faultConfig(impl string) Config {
	cfg := smallConfig(impl)
	cfg.Faults = 0.1
	return cfg
}

// requireFaultsMet checks that faults of both kinds were injected.
func requireFaultsMet(t *testing.T, rep Report) {
	t.Helper()
	require.Positive(t, rep.FaultsFailed, "no call failed")
	require.Positive(t, rep.FaultsStalled, "no call stalled")
	require.Less(t, rep.FaultsFailed+rep.FaultsStalled, rep.StoreCalls)
}

// Faults survived, nothing lost: with a tenth of the blockstore calls failing
// or stalling, the notifier keeps every invariant and every request that was
// not cancelled completes.
func TestRun_FaultsNothingLost(t *testing.T) {
	rep, err := Run(t.Context(), faultConfig("notifier"))
	require.NoError(t, err)
	requireClean(t, rep)
	require.Zero(t, rep.Stalled)
	require.Equal(t, rep.Requests, rep.Completed+rep.Cancelled, "every request completed or was cancelled")
	requireFaultsMet(t, rep)
	require.Positive(t, rep.Resent, "no message was sent again after a failed store")
	require.Positive(t, rep.Retries, "no Want was retried after a failed blockstore check")
}

// Legacy and compat meet the same faults, and never retry a Want. Legacy
// takes a failed blockstore check for a miss, as boxo's blockservice does; a
// block that only a local add provides is then asked of peers that do not
// have it, and the request stalls. bitswapcompat's Subscribe takes a failed
// check for a miss too (notifier.WithFailedCheckAsMiss); its Publish cannot
// return the error of its own store: a failed store ends the GetBlocks calls
// it concerns, and their requests fail (cut short, as a GetBlocks of boxo's
// block service whose PutMany fails), with no stale CANCEL (doc.go,
// "Faults"). Each run must still end and account for every request.
func TestRun_LegacyAndCompatMeetTheSameFaults(t *testing.T) {
	for _, impl := range []string{"legacy", "compat"} {
		t.Run(impl, func(t *testing.T) {
			cfg := faultConfig(impl)
			cfg.Stall = 300 * time.Millisecond
			rep, err := Run(t.Context(), cfg)
			require.NoError(t, err)
			requireFaultsMet(t, rep)
			require.Positive(t, rep.Resent, "no message was sent again after a failed store")
			require.Zero(t, rep.Retries)
			require.Positive(t, rep.Completed)
			require.Equal(t, rep.Requests, rep.Completed+rep.Cancelled+rep.Stalled+rep.CutShort+rep.Violations[ImplError])
			if impl == "compat" {
				require.Positive(t, rep.CutShort, "no failed store cut a call short")
				require.Zero(t, rep.Violations[StaleCancel], "a call that the PubSub cut short ended its wants before the client's CANCELs")
			} else {
				require.Zero(t, rep.CutShort, "legacy's PubSub never closes a call's channel early")
			}
			t.Logf("%s: %d cut short, violations: %v %q", impl, rep.CutShort, rep.Violations, rep.Examples)
		})
	}
}

// Without its recovery the simulator loses requests, and the checks say so:
// the recovery is what TestRun_FaultsNothingLost passes on, not luck. A run
// lasts a fixed time, so on a loaded machine (the whole suite under -race) a
// run may make too few calls for a fault to meet a request that only the
// recovery would save: the test allows a few runs to show it.
func TestRun_FaultsWithoutRecoveryAreCaught(t *testing.T) {
	const attempts = 5
	for _, tc := range []struct {
		name   string
		broken recovery
		want   []Violation
	}{
		{"no-resend", recovery{noResend: true}, []Violation{LostBlock, Incomplete}},
		{"no-retry", recovery{noRetry: true}, []Violation{ImplError, Incomplete}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := faultConfig("notifier")
			cfg.Faults, cfg.Stall, cfg.broken = 0.2, 200*time.Millisecond, tc.broken
			for i := range attempts {
				rep, err := Run(t.Context(), cfg)
				require.NoError(t, err)
				requireFaultsMet(t, rep)
				caught := rep.Completed+rep.Cancelled < rep.Requests
				for _, v := range tc.want {
					caught = caught && rep.Violations[v] > 0
				}
				if caught {
					return
				}
				t.Logf("run %d: nothing lost: %v, %d of %d requests completed or cancelled", i, rep.Violations, rep.Completed+rep.Cancelled, rep.Requests)
				cfg.Seed++
			}
			t.Fatalf("%d runs without the recovery lost nothing the checks report", attempts)
		})
	}
}

func TestConfig_ValidateFaults(t *testing.T) {
	for _, tc := range []struct {
		faults float64
		stall  time.Duration
		err    string
	}{
		{-0.1, 0, "faults -0.1: want a probability in [0, 1]"},
		{1.5, 0, "faults 1.5: want a probability in [0, 1]"},
		{0.1, -time.Millisecond, "fault stall -1ms"},
		{0.1, time.Second, "fault stall 1s: want >= 0 and under a quarter of stall (2s)"},
	} {
		cfg := DefaultConfig()
		cfg.Faults = tc.faults
		if tc.stall != 0 {
			cfg.FaultStall = tc.stall
		}
		require.ErrorContains(t, cfg.Validate(), tc.err)
	}
	cfg := DefaultConfig()
	cfg.Faults, cfg.FaultStall = 1, 0
	require.NoError(t, cfg.Validate(), "P 1 and stalls of no time are in range")
	_, err := Run(t.Context(), Config{Impl: "notifier", Faults: 2})
	require.ErrorContains(t, err, "faults 2")
}
