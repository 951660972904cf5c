package swapsim

import (
	"context"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// Impl is a bitswap client's receive path under test: what routes received
// blocks, HAVEs and DONT_HAVEs to the sessions that want them. All methods
// must be safe for concurrent use.
type Impl interface {
	// NewSession starts a session; id is reused once the previous session
	// with that id is closed.
	NewSession(id uint64) (Session, error)
	// Receive hands over a message from a peer, or (From "") blocks added
	// locally.
	Receive(ctx context.Context, msg notifier.ResponseMessage) error
	// Interest returns what the client still records: keys, (session, key)
	// wants and, if it counts them, live sessions.
	Interest() notifier.Stats
	// SyncCancels reports whether a want ends, and its CANCEL (if due) is
	// reported, before Session.Cancel returns and before its block reaches
	// the session. If not, the checker takes a want as ended only once its
	// session is closed.
	SyncCancels() bool
	Close() error
}

// wantEpochs is implemented by an Impl whose Want of a key may make several
// wants of it, one after the other, each of which may end, and be reported
// to the cancel function, on its own: WantEpochs says how many at most. The
// checker then lets one Want account for that many CANCELs (checker,
// ExtraCancel). An Impl without it makes one want of a key per Want.
type wantEpochs interface{ WantEpochs() int }

// Session is one session of an Impl; the driver calls it from one goroutine.
type Session interface {
	// Want requests keys. When it returns, the client sends WANTs for them.
	Want(ctx context.Context, keys []cid.Cid) error
	// Cancel ends the request midway: keys are the ones not received yet.
	Cancel(keys []cid.Cid)
	// Incoming carries every block, HAVE and DONT_HAVE for the session.
	Incoming() <-chan notifier.ResponseMessage
	// Close ends the session and every want it has left.
	Close()
}

// Factory builds an Impl that stores in bs and reports to cancel the keys
// that no session wants any more (where a client sends CANCELs).
type Factory func(bs notifier.Blockstore, cancel func(keys []cid.Cid)) Impl

// factories are the Impls that Config.Impl names.
var factories = map[string]Factory{
	"notifier":       newNotifierImpl,
	"notifier-fetch": newFetchImpl,
	"legacy":         newLegacyImpl,
	"compat":         newCompatImpl,
}

// notifierImpl is the Notifier, used as a fork would use it: one
// Subscription per session.
type notifierImpl struct{ n *notifier.Notifier }

func newNotifierImpl(bs notifier.Blockstore, cancel func([]cid.Cid)) Impl {
	return notifierImpl{notifier.New(bs, notifier.WithCancelFunc(cancel))}
}

func (m notifierImpl) NewSession(id uint64) (Session, error) {
	s, err := m.n.NewSubscription(id)
	if err != nil {
		return nil, err
	}
	return notifierSession{s}, nil
}

func (m notifierImpl) Receive(ctx context.Context, msg notifier.ResponseMessage) error {
	return m.n.Publish(ctx, msg)
}

func (m notifierImpl) Interest() notifier.Stats { return m.n.Stats() }

func (notifierImpl) SyncCancels() bool { return true }
func (m notifierImpl) Close() error    { return m.n.Close() }

type notifierSession struct{ s *notifier.Subscription }

func (s notifierSession) Want(ctx context.Context, keys []cid.Cid) error {
	return s.s.Subscribe(ctx, keys...)
}
func (s notifierSession) Cancel(keys []cid.Cid)                     { s.s.Unsubscribe(keys...) }
func (s notifierSession) Incoming() <-chan notifier.ResponseMessage { return s.s.Messages() }
func (s notifierSession) Close()                                    { s.s.Remove() }

// legacyImpl is today's two-layer client (internal/legacy), driven in boxo's
// call order: one legacy Session per session, one GetBlocks per Want.
type legacyImpl struct{ c *legacy.Client }

func newLegacyImpl(bs notifier.Blockstore, cancel func([]cid.Cid)) Impl {
	return legacyImpl{legacy.NewClient(bs, legacy.WithCancelFunc(cancel))}
}

func (m legacyImpl) Receive(ctx context.Context, msg notifier.ResponseMessage) error {
	return m.c.ReceiveMessage(ctx, msg.From, msg.Blocks, msg.Haves, msg.DontHaves)
}

func (m legacyImpl) Interest() notifier.Stats {
	keys, wants := m.c.InterestSize()
	return notifier.Stats{Keys: keys, Wants: wants}
}

func (legacyImpl) SyncCancels() bool { return false }
func (m legacyImpl) Close() error    { m.c.Close(); return nil }

// NewSession starts a legacy session and one goroutine that passes its
// HAVEs and DONT_HAVEs on: it stands where boxo's sessionWantSender goroutine
// consumes them.
func (m legacyImpl) NewSession(id uint64) (Session, error) {
	return newLegacySession(m.c, id, context.Background()), nil
}

// newLegacySession starts session id of c, whose GetBlocks calls get a
// context derived from parent.
func newLegacySession(c *legacy.Client, id uint64, parent context.Context) *legacySession {
	ctx, cancel := context.WithCancel(parent)
	s := &legacySession{
		ls:     c.NewSession(id),
		ctx:    ctx,
		cancel: cancel,
		out:    make(chan notifier.ResponseMessage, legacy.DefaultBufferSize),
		done:   make(chan struct{}),
	}
	s.wg.Add(1)
	go s.forwardUpdates()
	return s
}

// legacySession merges what a legacy session yields into one channel.
type legacySession struct {
	ls     *legacy.Session
	ctx    context.Context // the request's context: GetBlocks calls end with it
	cancel context.CancelFunc
	out    chan notifier.ResponseMessage
	done   chan struct{} // closed by Close: the forwarders stop
	wg     sync.WaitGroup
}

// Want calls GetBlocks and starts a goroutine that forwards its channel, as
// boxo's blockservice does for each GetBlocks.
func (s *legacySession) Want(ctx context.Context, keys []cid.Cid) error {
	callCtx := s.ctx
	if f := cutShortFunc(ctx); f != nil {
		callCtx = legacy.WithCutShortFunc(callCtx, f)
	}
	ch, err := s.ls.GetBlocks(callCtx, keys...)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go s.forwardBlocks(ch)
	return nil
}

// Cancel cancels the request's context, as a cancelled boxo request does:
// the session ends the remaining wants on its own goroutine.
func (s *legacySession) Cancel([]cid.Cid)                          { s.cancel() }
func (s *legacySession) Incoming() <-chan notifier.ResponseMessage { return s.out }

func (s *legacySession) Close() {
	close(s.done)
	s.cancel()
	s.ls.Close()
	s.wg.Wait()
}

func (s *legacySession) forwardBlocks(ch <-chan blocks.Block) {
	defer s.wg.Done()
	for b := range ch {
		if !s.send(notifier.ResponseMessage{Blocks: []blocks.Block{b}}) {
			return
		}
	}
}

func (s *legacySession) forwardUpdates() {
	defer s.wg.Done()
	for u := range s.ls.Updates() {
		if len(u.Haves) == 0 && len(u.DontHaves) == 0 {
			continue
		}
		if !s.send(notifier.ResponseMessage{From: u.From, Haves: u.Haves, DontHaves: u.DontHaves}) {
			return
		}
	}
}

func (s *legacySession) send(m notifier.ResponseMessage) bool {
	select {
	case s.out <- m:
		return true
	case <-s.done:
		return false
	}
}
