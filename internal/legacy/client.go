package legacy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrClosed is returned by Session.GetBlocks once the session or its Client is
// closed. Test for it with errors.Is.
var ErrClosed = errors.New("legacy: closed")

// Blockstore is what the Client needs; it has the shape of the root package's
// Blockstore, which boxo's blockstore.Blockstore satisfies. Only Get and
// PutMany are called: the blockstore check is a Get per key, as boxo's
// blockservice does it. The Client calls it from many goroutines at once, so
// it must be safe for concurrent use; a slow blockstore slows the caller of
// GetBlocks or ReceiveMessage, as in boxo.
type Blockstore interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	PutMany(ctx context.Context, blks []blocks.Block) error
}

// sessionQueueSize is the capacity of a session's incoming queue, boxo's
// session.incoming.
const sessionQueueSize = 128

// DefaultBufferSize is the capacity of a Session's Updates channel unless
// WithBufferSize says otherwise; it matches boxo's session queue.
const DefaultBufferSize = 128

// Notifications is boxo's notifications.PubSub interface: PubSub has its
// method set, and so has a replacement of it such as bitswapcompat.PubSub.
type Notifications interface {
	Publish(from peer.ID, blks ...blocks.Block)
	Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block
	Shutdown()
}

// SessionInterests is the method set of boxo's *SessionInterestManager, which
// SessionInterestManager has (with Size besides), and so has a replacement
// of it such as bitswapcompat.SessionInterestManager.
type SessionInterests interface {
	RecordSessionInterest(ses uint64, ks []cid.Cid)
	RemoveSession(ses uint64) []cid.Cid
	RemoveSessionWants(ses uint64, ks []cid.Cid) []cid.Cid
	FilterSessionInterested(ses uint64, ksets ...[]cid.Cid) [][]cid.Cid
	SplitWantedUnwanted(blks []blocks.Block) (wanted, unwanted []blocks.Block)
	InterestedSessions(keySets ...[]cid.Cid) []uint64
	FilterInterests(keySets ...[]cid.Cid) [][]cid.Cid
}

type config struct {
	cancel  func(keys []cid.Cid)
	bufSize int
	notif   Notifications    // nil: NewPubSub
	sim     SessionInterests // nil: NewSessionInterestManager
}

// An Option configures a Client; it is applied once, by NewClient.
type Option func(*config)

// WithCancelFunc sets f to receive the keys that no session wants any more,
// where boxo's SessionManager sends CANCELs to its peers. f is called, outside
// any lock of this package, by whichever goroutine ended the last want: a
// session's goroutine when a block arrives or a GetBlocks context ends, or the
// caller of CancelWants, Session.Close or Client.Close. f must be safe for
// concurrent use and should not block: a slow f delays that goroutine, and a
// session goroutine that waits delays ReceiveMessage. f must not call back
// into the Client from a session goroutine (Session.Close would wait for
// itself).
func WithCancelFunc(f func(keys []cid.Cid)) Option {
	return func(c *config) { c.cancel = f }
}

// WithBufferSize sets the capacity of each Session's Updates channel
// (default DefaultBufferSize). It panics if n is negative.
func WithBufferSize(n int) Option {
	if n < 0 {
		panic("legacy: negative buffer size")
	}
	return func(c *config) { c.bufSize = n }
}

// WithLayers makes the Client call notif and sim, in boxo's order, instead of
// this package's PubSub and SessionInterestManager: a fork's replacements of
// boxo's two layers then run under the same client. The Client owns them as
// it owns its own: Close calls notif.Shutdown. They are called as this
// package's are, RecordSessionInterest under a Session's mutex, so they must
// not call back into the Client. A nil notif or sim keeps this package's for
// that layer. InterestSize counts sim only if sim has a Size method of the
// same signature as SessionInterestManager's.
func WithLayers(notif Notifications, sim SessionInterests) Option {
	return func(c *config) { c.notif, c.sim = notif, sim }
}

// Client ties a PubSub and a SessionInterestManager together in the order in
// which boxo's bitswap client calls them. All methods are safe for concurrent
// use.
type Client struct {
	bs      Blockstore // nil: notify only, nothing is stored or checked
	notif   Notifications
	sim     SessionInterests
	cfg     config
	closing chan struct{} // closed first thing in Close
	once    sync.Once     // runs Close

	mu sync.Mutex // guards sessions; the SessionManager's sessLk
	// sessions holds the live sessions by ID; nil once Close has begun.
	sessions map[uint64]*Session
}

// NewClient returns a Client over bs; a nil bs makes it notify-only: received
// blocks are not stored and GetBlocks checks nothing. It starts the PubSub's
// goroutine, which Close stops, unless WithLayers gives another PubSub. It
// does not block.
func NewClient(bs Blockstore, opts ...Option) *Client {
	cfg := config{bufSize: DefaultBufferSize}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.notif == nil {
		cfg.notif = NewPubSub()
	}
	if cfg.sim == nil {
		cfg.sim = NewSessionInterestManager()
	}
	return &Client{
		bs:       bs,
		notif:    cfg.notif,
		sim:      cfg.sim,
		cfg:      cfg,
		closing:  make(chan struct{}),
		sessions: make(map[uint64]*Session),
	}
}

// ReceiveMessage handles a message received from peer from, or blocks added by
// this node when from is "", in the order of boxo's receiveBlocksFrom:
//
//  1. SplitWantedUnwanted (remote only: local blocks are all kept);
//  2. PutMany of the kept blocks, unless the Client is notify-only; on error
//     nothing else happens and the error is returned;
//  3. FilterInterests over all block keys, haves and dontHaves, then
//     InterestedSessions, then for each such session FilterSessionInterested
//     and a send of the result to its incoming queue;
//  4. Publish of the kept blocks.
//
// Each step takes and releases its own lock, so other calls interleave between
// them. It is safe for concurrent use. It blocks while an interested session's
// incoming queue is full, that is while its consumer does not drain Updates,
// as boxo's ReceiveFrom does. After Close it does nothing and returns nil.
// It does not modify blks, haves or dontHaves.
func (c *Client) ReceiveMessage(ctx context.Context, from string, blks []blocks.Block, haves, dontHaves []cid.Cid) error {
	select {
	case <-c.closing:
		return nil
	default:
	}
	if len(blks) == 0 && len(haves) == 0 && len(dontHaves) == 0 {
		return nil
	}
	kept := blks
	if from != "" {
		kept, _ = c.sim.SplitWantedUnwanted(blks)
	}
	if c.bs != nil && len(kept) > 0 {
		if err := c.bs.PutMany(ctx, kept); err != nil {
			return fmt.Errorf("legacy: storing %d blocks from %q: %w", len(kept), from, err)
		}
	}
	keys := make([]cid.Cid, len(blks))
	for i, b := range blks {
		keys[i] = b.Cid()
	}
	// A bitswap message hands out fresh slices of its HAVEs and DONT_HAVEs,
	// which FilterInterests then overwrites; the copies reproduce that.
	c.receiveFrom(from, keys, slices.Clone(haves), slices.Clone(dontHaves))
	c.notif.Publish(peer.ID(from), kept...)
	return nil
}

// receiveFrom is the SessionManager's ReceiveFrom. It overwrites its slices.
func (c *Client) receiveFrom(from string, ks, haves, dontHaves []cid.Cid) {
	f := c.sim.FilterInterests(ks, haves, dontHaves)
	ks, haves, dontHaves = f[0], f[1], f[2]
	for _, id := range c.sim.InterestedSessions(ks, haves, dontHaves) {
		c.mu.Lock()
		if c.sessions == nil {
			c.mu.Unlock()
			return
		}
		s, ok := c.sessions[id]
		c.mu.Unlock()
		if ok {
			s.receiveFrom(from, ks, haves, dontHaves)
		}
	}
}

// cancelSessionWants is the SessionManager's CancelSessionWants.
func (c *Client) cancelSessionWants(id uint64, ks []cid.Cid) []cid.Cid {
	gone := c.sim.RemoveSessionWants(id, ks)
	c.sendCancels(gone)
	return gone
}

// removeSession is the SessionManager's RemoveSession: the interest goes first,
// then the session leaves the map.
func (c *Client) removeSession(s *Session) []cid.Cid {
	gone := c.sim.RemoveSession(s.id)
	c.sendCancels(gone)
	c.mu.Lock()
	if c.sessions != nil && c.sessions[s.id] == s {
		delete(c.sessions, s.id)
	}
	c.mu.Unlock()
	return gone
}

func (c *Client) sendCancels(ks []cid.Cid) {
	if c.cfg.cancel != nil && len(ks) > 0 {
		c.cfg.cancel(ks)
	}
}

// InterestSize returns the number of CIDs that some session wants and the
// number of (session, CID) wants. It is safe for concurrent use; it takes the
// interest map's read lock and visits every CID. With a SessionInterests of
// WithLayers that has no Size method it returns 0, 0: ask that layer's owner.
func (c *Client) InterestSize() (keys, pairs int) {
	if s, ok := c.sim.(interface{ Size() (int, int) }); ok {
		return s.Size()
	}
	return 0, 0
}

// Close closes every session, as Session.Close does, then shuts the PubSub
// down, in the order of boxo's Client.Close. It is safe for concurrent use and
// idempotent; it blocks until every session's goroutine has returned. The
// goroutines of GetBlocks calls end soon after, without waiting for their
// contexts, and none of this package's goroutines is left.
func (c *Client) Close() {
	c.once.Do(func() {
		close(c.closing)
		c.mu.Lock()
		sessions := c.sessions
		c.sessions = nil
		c.mu.Unlock()
		for _, s := range sessions {
			s.Close()
		}
		c.notif.Shutdown()
	})
}
