package swapsim

import (
	"context"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/bitswapcompat"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// bitswapcompat's two layers have the method sets of boxo's, which legacy's
// Client calls.
var (
	_ legacy.Notifications    = (*bitswapcompat.PubSub)(nil)
	_ legacy.SessionInterests = (*bitswapcompat.SessionInterestManager)(nil)
)

// compatImpl is legacyImpl, boxo's call order, with bitswapcompat's PubSub
// and SessionInterestManager in place of legacy's reproductions of boxo's
// (legacy.WithLayers). The two share one Notifier
// (bitswapcompat.NewWithOptions, as a fork's client.go builds them in
// MIGRATION.md) that has the client's blockstore, so that a block stored
// between GetBlocks' check and its Subscribe still arrives (the lost wakeup
// that legacy keeps), and that reports CANCELs to the cancel function
// (MIGRATION.md, step 3): inside the operation that ended a key's last want,
// so that no CANCEL overtakes a newer WANT. RemoveSessionWants and
// RemoveSession then return no keys, and the Client sends none itself.
//
// The Client keeps the blockstore too: its check is the block service's, and
// it stores each message before routing it, as legacy does, so a remote
// block is stored twice (the Notifier's PutMany comes second).
type compatImpl struct {
	legacyImpl
	n *notifier.Notifier // the Notifier of both layers
}

func newCompatImpl(bs notifier.Blockstore, cancel func([]cid.Cid)) Impl {
	ps, sim := bitswapcompat.NewWithOptions(bs, bitswapcompat.WithCancelFunc(cancel))
	c := legacy.NewClient(bs, legacy.WithLayers(trackedPubSub{ps}, sim))
	return compatImpl{legacyImpl: legacyImpl{c}, n: bitswapcompat.NotifierOf(ps)}
}

// WantEpochs is 2: a Want makes the GetBlocks call's want of each key, then
// the session's interest in it (RecordSessionInterest), and a block that
// reaches the call in between ends the first, the key's last, with a CANCEL
// of its own; the interest ends with another (wantEpochs,
// TestCompat_BlockBeforeTheSessionsInterestMakesTwoCancels). On the wire the
// first CANCEL goes before the WANT it could cancel and does no harm; boxo's
// own layers send only the second.
func (compatImpl) WantEpochs() int { return 2 }

// Interest is the shared Notifier's: the sessions' interests and the
// GetBlocks calls still waiting are all there.
func (m compatImpl) Interest() notifier.Stats { return m.n.Stats() }

// NewSession starts a legacy session whose GetBlocks calls, made under a
// context that carries the session's callSet, are listed there.
func (m compatImpl) NewSession(id uint64) (Session, error) {
	calls := new(callSet)
	s := newLegacySession(m.c, id, context.WithValue(context.Background(), callSetKey{}, calls))
	return compatSession{s, calls}, nil
}

// compatSession is a legacySession whose Close also waits for the PubSub
// calls of its GetBlocks to end. A call whose context ends (Cancel, Close)
// ends on context.AfterFunc's goroutine, and so does its want of each key:
// with the Notifier's cancel function, the CANCEL of a key that only such a
// call still wants comes from there, after a legacy session's Close may have
// returned (MIGRATION.md, step 3: "the CANCEL of such a key goes out when
// that call ends"). Close ends every want of the session (Session), so it
// waits for them.
type compatSession struct {
	*legacySession
	calls *callSet
}

func (s compatSession) Close() {
	s.legacySession.Close()
	s.calls.wait()
}

// callSetKey is the context key of a session's callSet.
type callSetKey struct{}

// callSet lists the channels of a session's PubSub calls.
type callSet struct {
	mu  sync.Mutex
	chs []<-chan blocks.Block
}

func (c *callSet) add(ch <-chan blocks.Block) {
	c.mu.Lock()
	c.chs = append(c.chs, ch)
	c.mu.Unlock()
}

// wait returns once every listed channel is closed: a call closes its
// channel once it has left the Notifier. The session is closed, so what is
// left in a channel is read by no one else.
func (c *callSet) wait() {
	c.mu.Lock()
	chs := c.chs
	c.chs = nil
	c.mu.Unlock()
	for _, ch := range chs {
		for range ch {
		}
	}
}

// trackedPubSub is bitswapcompat's PubSub that lists each Subscribe's channel
// in the callSet of its context, if any.
type trackedPubSub struct{ *bitswapcompat.PubSub }

func (p trackedPubSub) Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block {
	ch := p.PubSub.Subscribe(ctx, keys...)
	if calls, ok := ctx.Value(callSetKey{}).(*callSet); ok {
		calls.add(ch)
	}
	return ch
}
