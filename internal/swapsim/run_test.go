package swapsim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// smallConfig is a load that runs in well under a second, even with -race.
func smallConfig(impl string) Config {
	cfg := DefaultConfig()
	cfg.Impl = impl
	cfg.Duration = 300 * time.Millisecond
	cfg.Sessions, cfg.Peers, cfg.WantPeers = 8, 6, 3
	cfg.MinLatency, cfg.MaxLatency = 0, 2*time.Millisecond
	cfg.Depth, cfg.Fanout = 3, 4
	cfg.Share, cfg.Cancel, cfg.LocalAdd, cfg.LocalOnly = 0.5, 0.3, 0.3, 0.1
	cfg.Unsolicited = 0.2
	return cfg
}

func requireClean(t *testing.T, rep Report) {
	t.Helper()
	requireNoViolation(t, rep)
	require.Positive(t, rep.Cancelled)
	require.Positive(t, rep.Blocks)
	require.Positive(t, rep.Haves+rep.DontHaves)
	require.Positive(t, rep.LocalAdds)
	require.Positive(t, rep.Unsolicited)
	require.Positive(t, rep.LatencyP50)
	require.Positive(t, rep.BlockRate)
	require.Positive(t, rep.MessageRate)
	require.LessOrEqual(t, rep.Load, rep.Elapsed)
}

// requireNoViolation checks the invariants and that the run did some work. On
// a slow disk, or a machine busy with other tests, a short run may see too few
// requests to hit every kind of event, so requireClean is for in-memory runs.
func requireNoViolation(t *testing.T, rep Report) {
	t.Helper()
	require.Zero(t, rep.TotalViolations(), "violations %v: %q", rep.Violations, rep.Examples)
	require.Positive(t, rep.Completed)
	require.Equal(t, rep.Requests, rep.Completed+rep.Cancelled+rep.Stalled)
}

func TestRun_NotifierKeepsTheInvariants(t *testing.T) {
	rep, err := Run(t.Context(), smallConfig("notifier"))
	require.NoError(t, err)
	requireClean(t, rep)
}

func TestRun_NotifierOnFlatfs(t *testing.T) {
	cfg := smallConfig("notifier")
	cfg.Store, cfg.Dir, cfg.Stall = "flatfs", t.TempDir(), 10*time.Second
	rep, err := Run(t.Context(), cfg)
	require.NoError(t, err)
	requireNoViolation(t, rep)
}

// Compat is legacy's client over bitswapcompat's layers: what legacy loses,
// it must not. A Want of compat makes two wants of a key, and a block that
// comes between them makes two CANCELs
// (TestCompat_BlockBeforeTheSessionsInterestMakesTwoCancels), which the
// checker allows it (compatImpl.WantEpochs).
func TestRun_CompatKeepsTheInvariants(t *testing.T) {
	rep, err := Run(t.Context(), smallConfig("compat"))
	require.NoError(t, err)
	requireClean(t, rep)
	require.Zero(t, rep.Stalled)
	require.Equal(t, rep.Requests, rep.Completed+rep.Cancelled, "every request completed or was cancelled")
}

// Legacy may violate invariants (that is its point); the run must still end
// and account for every request.
func TestRun_Legacy(t *testing.T) {
	cfg := smallConfig("legacy")
	cfg.Stall = 300 * time.Millisecond
	rep, err := Run(t.Context(), cfg)
	require.NoError(t, err)
	require.Positive(t, rep.Completed)
	require.Equal(t, rep.Requests, rep.Completed+rep.Cancelled+rep.Stalled+rep.Violations[ImplError])
	t.Logf("legacy violations: %v %q", rep.Violations, rep.Examples)
}

func TestRun_StopsWithContext(t *testing.T) {
	cfg := smallConfig("notifier")
	cfg.Duration = time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep, err := Run(ctx, cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Requests)
}

// Each fault, injected into the notifier, must be caught by its check.
func TestRun_DetectsInjectedFaults(t *testing.T) {
	for _, tc := range []struct {
		fault  string
		want   Violation
		faults float64 // Config.Faults
	}{
		{"drop-blocks", LostBlock, 0},
		{"drop-blocks", Incomplete, 0},
		{"swallow-store-errors", NotStored, 0.2},
		{"deliver-twice", DuplicateBlock, 0},
		{"stray-have", UnexpectedKey, 0},
		{"cancel-live-wants", StaleCancel, 0},
		{"cancel-twice", ExtraCancel, 0},
		{"no-cancel", MissingCancel, 0},
		{"store-everything", Unsolicited, 0},
		{"leftover-interest", IndexNotEmpty, 0},
		{"ignore-failed-checks", ImplError, 0.2},
	} {
		t.Run(tc.fault+"/"+tc.want.key(), func(t *testing.T) {
			cfg := smallConfig("notifier")
			cfg.Stall, cfg.Faults = 200*time.Millisecond, tc.faults
			rep, err := run(t.Context(), cfg, faulty(tc.fault))
			require.NoError(t, err)
			require.Positive(t, rep.Violations[tc.want], "%v: %q", rep.Violations, rep.Examples)
		})
	}
}

// faulty returns a Factory of the notifier with one fault injected.
func faulty(fault string) Factory {
	return func(bs notifier.Blockstore, cancel func([]cid.Cid)) Impl {
		switch fault {
		case "no-cancel":
			cancel = func([]cid.Cid) {}
		case "cancel-twice":
			real := cancel
			cancel = func(k []cid.Cid) { real(k); real(k) }
		case "swallow-store-errors":
			bs = swallowStore{bs}
		}
		return &faultyImpl{Impl: newNotifierImpl(bs, cancel), bs: bs, cancel: cancel, fault: fault}
	}
}

// swallowStore reports every PutMany as a success, so that the client
// delivers blocks that failed to store.
type swallowStore struct{ notifier.Blockstore }

func (s swallowStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	_ = s.Blockstore.PutMany(ctx, blks) // the fault under test
	return nil
}

type faultyImpl struct {
	Impl
	bs     notifier.Blockstore
	cancel func([]cid.Cid)
	fault  string
}

func (f *faultyImpl) Receive(ctx context.Context, msg notifier.ResponseMessage) error {
	if f.fault == "store-everything" && len(msg.Blocks) > 0 {
		if err := f.bs.PutMany(ctx, msg.Blocks); err != nil {
			return err
		}
	}
	return f.Impl.Receive(ctx, msg)
}

func (f *faultyImpl) Interest() notifier.Stats {
	st := f.Impl.Interest()
	if f.fault == "leftover-interest" {
		st.Keys++
	}
	return st
}

func (f *faultyImpl) NewSession(id uint64) (Session, error) {
	s, err := f.Impl.NewSession(id)
	if err != nil {
		return nil, err
	}
	fs := &faultySession{Session: s, f: f, out: make(chan notifier.ResponseMessage), done: make(chan struct{})}
	fs.wg.Add(1)
	go fs.forward()
	return fs, nil
}

// faultySession passes the session's messages on through its own channel,
// tampering with them.
type faultySession struct {
	Session
	f    *faultyImpl
	out  chan notifier.ResponseMessage
	done chan struct{}
	wg   sync.WaitGroup
	last []cid.Cid // keys of the last Want
}

func (s *faultySession) Want(ctx context.Context, keys []cid.Cid) error {
	if s.f.fault == "cancel-live-wants" && len(s.last) > 0 {
		s.f.cancel(s.last) // CANCELs for wants the session still has
	}
	s.last = keys
	err := s.Session.Want(ctx, keys)
	if s.f.fault == "ignore-failed-checks" && errors.Is(err, faultbs.ErrInjected) {
		return nil // a failed check taken for a miss, as legacy does
	}
	return err
}

func (s *faultySession) Incoming() <-chan notifier.ResponseMessage { return s.out }

func (s *faultySession) Close() {
	close(s.done)
	s.Session.Close()
	s.wg.Wait()
}

func (s *faultySession) forward() {
	defer s.wg.Done()
	for m := range s.Session.Incoming() {
		for _, m := range s.tamper(m) {
			select {
			case s.out <- m:
			case <-s.done:
				return
			}
		}
	}
}

func (s *faultySession) tamper(m notifier.ResponseMessage) []notifier.ResponseMessage {
	switch s.f.fault {
	case "drop-blocks":
		kept := m.Blocks[:0:0]
		for _, b := range m.Blocks {
			if k := b.Cid().Bytes(); k[len(k)-1]%8 != 0 {
				kept = append(kept, b)
			}
		}
		m.Blocks = kept
	case "deliver-twice":
		return []notifier.ResponseMessage{m, m}
	case "stray-have":
		m.Haves = append(m.Haves, blocks.NewBlock([]byte("never asked for")).Cid())
	}
	return []notifier.ResponseMessage{m}
}
