package legacy

import (
	"context"
	"fmt"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// Update is what one received message tells one session: the keys of the
// message's blocks, HAVEs and DONT_HAVEs that the session wanted when
// ReceiveMessage filtered them, with the sender ("" for local blocks). The
// blocks themselves reach the session's callers through GetBlocks. Each
// session gets its own slices; the receiver may keep or modify them.
type Update struct {
	From      string
	Blocks    []cid.Cid
	Haves     []cid.Cid
	DontHaves []cid.Cid
}

func (u Update) empty() bool {
	return len(u.Blocks) == 0 && len(u.Haves) == 0 && len(u.DontHaves) == 0
}

type opKind int

const (
	opReceive opKind = iota // a message filtered for the session
	opCancel                // a GetBlocks ended with keys still missing
)

// op is an entry of a session's incoming queue, as in boxo's session.
type op struct {
	kind   opKind
	update Update    // opReceive
	keys   []cid.Cid // opCancel
}

// Session is one bitswap session: an ID in the interest map, an incoming
// queue of capacity 128 and one goroutine that drains it, as in boxo's
// internal/session. The goroutine ends the session's want for each block it
// receives (boxo's handleReceive), ends the wants that a finished GetBlocks
// left open (boxo's opCancel), and passes each Update on to Updates.
//
// boxo splits a message between two goroutines: block keys go to the incoming
// queue, and block keys, HAVEs and DONT_HAVEs go to the session want sender's
// unbounded queue (a channel, a forwarding goroutine and a second channel).
// Here one bounded queue carries the whole filtered message, and Updates
// stands where the want sender is: the locks taken per message are boxo's, a
// message makes two channel hops as a HAVE does in boxo, and a block makes one
// hop fewer than in boxo. The want itself is recorded by GetBlocks, not by the
// goroutine: see GetBlocks.
//
// All methods are safe for concurrent use.
type Session struct {
	id uint64
	c  *Client
	// ctx is the session's lifetime, boxo's session context: cancelled when
	// Close begins. Every blocking send to or from the session selects on it.
	ctx      context.Context
	cancel   context.CancelFunc
	incoming chan op       // read only by run
	updates  chan Update   // written only by run, closed when run returns
	done     chan struct{} // closed when run has returned

	// mu guards closed. GetBlocks holds it across RecordSessionInterest so
	// that no want is recorded after Close has removed the session's wants;
	// boxo gets that by recording on the session goroutine.
	// Lock order: mu, then the SessionInterestManager's lock.
	mu     sync.Mutex
	closed bool
}

// NewSession registers a session with the given ID and starts its goroutine,
// which runs until Close or Client.Close. It is safe for concurrent use and
// does not block. It panics if a live session has the same ID: boxo hands out
// IDs itself, so a duplicate is a bug in the caller. After Client.Close it
// returns a session that is already closed.
func (c *Client) NewSession(id uint64) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		id:       id,
		c:        c,
		ctx:      ctx,
		cancel:   cancel,
		incoming: make(chan op, sessionQueueSize),
		updates:  make(chan Update, c.cfg.bufSize),
		done:     make(chan struct{}),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions == nil {
		s.closed = true
		cancel()
		close(s.updates)
		close(s.done)
		return s
	}
	if _, dup := c.sessions[id]; dup {
		panic(fmt.Sprintf("legacy: session %d is already live", id))
	}
	c.sessions[id] = s
	go s.run()
	return s
}

// ID returns the session's ID. It is safe for concurrent use.
func (s *Session) ID() uint64 { return s.id }

// Updates returns the channel on which the session's goroutine passes on, in
// the order ReceiveMessage enqueued them, the Updates of the messages that
// concerned the session. The goroutine closes it when it returns, after Close
// or Client.Close. It is safe for concurrent use.
//
// The consumer must drain it: while it is full the goroutine waits, the
// incoming queue fills, and ReceiveMessage then waits too, as boxo does when a
// session falls behind.
func (s *Session) Updates() <-chan Update { return s.updates }

// GetBlocks requests keys for the session and returns a channel, buffered to
// len(keys), that receives each block once. The steps are those of boxo's
// blockservice and getter, in their order, each under its own lock:
//
//  1. a blockstore Get per key (none if notify-only); any error counts as a
//     miss; found blocks are put on the channel;
//  2. PubSub.Subscribe for the misses;
//  3. RecordSessionInterest for the misses (boxo does it on the session
//     goroutine right before sending the WANTs; here it is done before
//     GetBlocks returns, so that a reply to a WANT sent after that finds it);
//  4. a goroutine (boxo's handleIncoming) forwards the subscription to the
//     channel, closes the channel when every key arrived, ctx is done or the
//     session closes, and then has the session end the wants of the keys
//     that never arrived.
//
// A block stored between steps 1 and 2 is never delivered: that is the lost
// wakeup being measured. GetBlocks is safe for concurrent use and does not
// wait for blocks. It returns ErrClosed once the session or the Client is
// closed; a Close racing with it closes the channel early.
func (s *Session) GetBlocks(ctx context.Context, keys ...cid.Cid) (<-chan blocks.Block, error) {
	if s.ctx.Err() != nil {
		return nil, ErrClosed
	}
	out := make(chan blocks.Block, len(keys))
	misses := s.c.lookup(ctx, keys, out)
	if len(misses) == 0 {
		close(out)
		return out, nil
	}
	in := s.c.notif.Subscribe(ctx, misses...)
	s.want(misses)
	go s.handleIncoming(ctx, misses, in, out)
	return out, nil
}

// lookup is the blockservice's check: found blocks go to out, which has room
// for all of keys; the others are returned.
func (c *Client) lookup(ctx context.Context, keys []cid.Cid, out chan<- blocks.Block) []cid.Cid {
	if c.bs == nil {
		return keys
	}
	var misses []cid.Cid
	for _, k := range keys {
		b, err := c.bs.Get(ctx, k)
		if err != nil {
			misses = append(misses, k)
			continue
		}
		out <- b
	}
	return misses
}

func (s *Session) want(ks []cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		// NOTE: takes the SessionInterestManager's lock under s.mu.
		s.c.sim.RecordSessionInterest(s.id, ks)
	}
}

// handleIncoming is boxo's getter.handleIncoming, with the session's channel
// as its output.
func (s *Session) handleIncoming(ctx context.Context, keys []cid.Cid, in <-chan blocks.Block, out chan<- blocks.Block) {
	remaining := cid.NewSet()
	for _, k := range keys {
		remaining.Add(k)
	}
	defer func() {
		close(out)
		left := remaining.Keys()
		if len(left) > 0 && ctx.Err() == nil && s.ctx.Err() == nil {
			cutShort(ctx, left)
		}
		s.enqueue(op{kind: opCancel, keys: left})
	}()
	for {
		select {
		case b, ok := <-in:
			if !ok {
				return
			}
			remaining.Remove(b.Cid())
			select {
			case out <- b:
			case <-ctx.Done():
				return
			case <-s.ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// cutShortKey is the context key of WithCutShortFunc's function.
type cutShortKey struct{}

// WithCutShortFunc returns a context for GetBlocks whose call calls f with
// the keys it still waited for if the PubSub closes its channel early (not
// ctx, not the session's Close): bitswapcompat ends the calls that wait for
// the blocks of a message whose store failed. f runs on the call's
// goroutine, after the call's channel is closed and before the session ends
// the wants of those keys (boxo's getter sends their CANCELs next): an
// instrument for a caller that must know which comes first. It must not
// block.
func WithCutShortFunc(ctx context.Context, f func(keys []cid.Cid)) context.Context {
	return context.WithValue(ctx, cutShortKey{}, f)
}

// cutShort calls the function of WithCutShortFunc in ctx, if any.
func cutShort(ctx context.Context, keys []cid.Cid) {
	if f, ok := ctx.Value(cutShortKey{}).(func([]cid.Cid)); ok {
		f(keys)
	}
}

// enqueue waits for room in the incoming queue; after Close it drops o, whose
// wants RemoveSession ends anyway.
func (s *Session) enqueue(o op) {
	select {
	case s.incoming <- o:
	case <-s.ctx.Done():
	}
}

// receiveFrom is boxo's Session.ReceiveFrom, called by ReceiveMessage for each
// interested session, on ReceiveMessage's goroutine.
func (s *Session) receiveFrom(from string, ks, haves, dontHaves []cid.Cid) {
	r := s.c.sim.FilterSessionInterested(s.id, ks, haves, dontHaves)
	u := Update{From: from, Blocks: r[0], Haves: r[1], DontHaves: r[2]}
	if u.empty() {
		return
	}
	s.enqueue(op{kind: opReceive, update: u})
}

// run is the session goroutine; it returns when Close cancels ctx. An op still
// queued then is dropped, even if select picked it: RemoveSession ends the
// wants it would have ended, so that Close, not a late op, reports them.
func (s *Session) run() {
	defer close(s.done)
	defer close(s.updates)
	for {
		select {
		case o := <-s.incoming:
			if s.ctx.Err() != nil || !s.handle(o) {
				return
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// handle applies one op; it reports false once the session is closing.
func (s *Session) handle(o op) bool {
	switch o.kind {
	case opReceive:
		if len(o.update.Blocks) > 0 {
			s.c.cancelSessionWants(s.id, o.update.Blocks)
		}
		select {
		case s.updates <- o.update:
		case <-s.ctx.Done():
			return false
		}
	case opCancel:
		if len(o.keys) > 0 {
			s.c.cancelSessionWants(s.id, o.keys)
		}
	}
	return true
}

// CancelWants ends the session's wants for keys, as boxo's
// SessionManager.CancelSessionWants does, and returns the keys that no session
// wants any more; the cancel function receives the same keys. Blocks already
// subscribed to by GetBlocks still arrive if someone else fetches them. It is
// safe for concurrent use and takes the interest map's write lock; it does not
// wait for the session's goroutine.
func (s *Session) CancelWants(keys ...cid.Cid) []cid.Cid {
	return s.c.cancelSessionWants(s.id, keys)
}

// Close stops the session's goroutine, waits for it, and removes the session
// as boxo's SessionManager.RemoveSession does: RemoveSession on the interest
// map (a scan of every wanted CID under the write lock), then the cancel
// function, then the session table. It returns the keys that no session wants
// any more: every want the session still had when its goroutine stopped, ops
// still queued for that goroutine being dropped. It is safe for concurrent use
// and idempotent: a later call returns nil at once. The session's GetBlocks
// channels close soon after.
func (s *Session) Close() []cid.Cid {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	return s.c.removeSession(s)
}
