package notifier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/bitswapsync/notifier/internal/fifo"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"
)

// Subscription is one session's view of the Notifier: the keys it wants and
// the channel on which it receives what arrives for them. Create it with
// Notifier.NewSubscription; all methods are safe for concurrent use.
//
// An idle subscription costs no goroutine. Messages wait in the channel's
// buffer and, when that is full, in a backlog that one goroutine per lagging
// subscription drains into the channel, in publish order, and then exits.
type Subscription struct {
	n   *Notifier
	id  uint64
	seq uint64 // unique, unlike id; orders the locking of several subscriptions

	fn   func(ResponseMessage) // set for NewSubscriptionFunc: takes messages instead of out
	out  chan ResponseMessage  // closed once, by stop or, while draining, by drain
	quit chan struct{}         // closed by stop while draining, to stop drain

	// mu guards the fields below. It is taken after shard locks (see shard.mu).
	mu       sync.Mutex
	keys     map[cid.Cid]struct{}        // wanted keys; k is here exactly when the index lists s under k
	backlog  fifo.Queue[ResponseMessage] // messages out could not take yet
	draining bool                        // a drain goroutine is running and is out's only sender
	exited   chan struct{}               // closed when the latest drain goroutine returns
	overflow bool                        // past WithMaxPending: the op that saw it ends s
	done     bool                        // ended: nothing more is sent, keys are empty
	err      error                       // why it ended; see Err
}

func newSubscription(n *Notifier, id uint64, bufSize int) *Subscription {
	return &Subscription{
		n:    n,
		id:   id,
		seq:  n.subSeq.Add(1),
		out:  make(chan ResponseMessage, bufSize),
		quit: make(chan struct{}),
		keys: make(map[cid.Cid]struct{}),
	}
}

// ID returns the session ID given to NewSubscription.
func (s *Subscription) ID() uint64 { return s.id }

// Messages returns the channel on which the subscription receives, in publish
// order, every message filtered to the keys it wants. The Notifier closes it
// when the subscription ends: after Remove, Close, or when it is ended as a
// slow consumer; Err then says why.
func (s *Subscription) Messages() <-chan ResponseMessage { return s.out }

// Err returns why Messages() was closed: nil after Remove (or while the
// subscription is live), ErrClosed after Close, ErrSlowConsumer if it fell
// more than WithMaxPending messages behind. It does not block.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// endedErr is what operations on an ended subscription return.
func (s *Subscription) endedErr() error {
	if s.err != nil {
		return fmt.Errorf("notifier: subscription %d ended: %w", s.id, s.err)
	}
	return fmt.Errorf("notifier: subscription %d removed: %w", s.id, ErrClosed)
}

// Subscribe makes the subscription want keys and, in the same atomic step,
// looks each newly wanted key up in the blockstore: a block already there is
// delivered at once, to this subscription and to every other one waiting for
// it, as if it had been published locally. Once Subscribe has returned nil,
// the block of each key reaches the subscription unless it stops wanting the
// key first.
//
// Keys already wanted are ignored; duplicates are fine. An undefined key
// fails the call with ErrInvalidCid before anything changes. If the
// blockstore fails, the wants this call added are taken back and the error is
// returned wrapped. Subscribe blocks only for the blockstore and for other
// operations on the same shards. After Close or Remove it returns ErrClosed;
// after a slow-consumer end, ErrSlowConsumer.
func (s *Subscription) Subscribe(ctx context.Context, keys ...cid.Cid) error {
	if err := validateKeys("keys", keys); err != nil {
		return err
	}
	n := s.n
	if n.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("notifier: subscribe: %w", err)
	}
	o := n.getOp()
	defer n.putOp(o)
	for _, k := range keys {
		sh := n.shardOf(k)
		o.keyShards = append(o.keyShards, sh)
		o.locks.Add(int(sh))
	}
	n.lock(o.locks)
	if n.closed.Load() {
		n.unlock(o.locks)
		return ErrClosed
	}
	if err := s.want(o, keys); err != nil {
		n.unlock(o.locks)
		return err
	}
	if err := s.check(ctx, o); err != nil {
		s.unwant(o)
		n.unlock(o.locks)
		return err
	}
	n.deliver(o, "")
	n.finish(o)
	if slices.Contains(o.ended, s) { // its own blockstore hits overflowed it
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.endedErr()
	}
	return nil
}

// want adds the keys s does not want yet to s.keys and to the index, and puts
// them in o.hits as candidates for the blockstore check. The caller holds
// their shard locks.
func (s *Subscription) want(o *op, keys []cid.Cid) error {
	s.mu.Lock()
	if s.done {
		err := s.endedErr()
		s.mu.Unlock()
		return err
	}
	for i, k := range keys {
		if _, ok := s.keys[k]; ok {
			continue
		}
		s.keys[k] = struct{}{}
		o.hits = append(o.hits, hit{key: k, shard: o.keyShards[i], kind: kindBlock})
	}
	s.mu.Unlock()
	for i := range o.hits {
		h := &o.hits[i]
		h.e = s.n.shards[h.shard].idx.add(h.key, s, o.id)
	}
	return nil
}

// check keeps in o.hits only the candidates whose block is in the blockstore,
// with the block. On error o.hits still lists every candidate, for unwant.
func (s *Subscription) check(ctx context.Context, o *op) error {
	bs := s.n.bs
	if bs == nil {
		o.hits = o.hits[:0]
		return nil
	}
	for i := range o.hits {
		h := &o.hits[i]
		blk, err := bs.Get(ctx, h.key)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("notifier: subscribe: check blockstore for %s: %w", h.key, err)
		}
		if err == nil {
			h.blk = blk
		}
	}
	o.hits = slices.DeleteFunc(o.hits, func(h hit) bool { return h.blk == nil })
	return nil
}

func isNotFound(err error) bool {
	return format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound)
}

// unwant takes back the wants that want added to o.hits. The caller holds
// their shard locks. No cancel is due: no WANT was sent for them.
func (s *Subscription) unwant(o *op) {
	s.mu.Lock()
	for _, h := range o.hits {
		delete(s.keys, h.key)
		s.n.shards[h.shard].idx.remove(h.key, s)
	}
	s.mu.Unlock()
}

// Unsubscribe ends the subscription's wants of keys; keys it does not want are
// ignored. Keys that nobody wants any more go to the cancel function before
// Unsubscribe returns. It is safe for concurrent use and blocks only for
// other operations on the same shards.
func (s *Subscription) Unsubscribe(keys ...cid.Cid) {
	if len(keys) == 0 {
		return
	}
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	for _, k := range keys {
		sh := n.shardOf(k)
		o.keyShards = append(o.keyShards, sh)
		o.locks.Add(int(sh))
	}
	n.lock(o.locks)
	s.mu.Lock()
	for i, k := range keys {
		if _, ok := s.keys[k]; !ok {
			continue
		}
		delete(s.keys, k)
		s.unindex(o, k, o.keyShards[i])
	}
	s.mu.Unlock()
	n.finish(o)
}

// unindex removes s from the index under k and, if that was k's last want,
// queues k for the cancel function. The caller holds k's shard lock and s.mu.
func (s *Subscription) unindex(o *op, k cid.Cid, sh int32) {
	if _, last := s.n.shards[sh].idx.remove(k, s); last {
		o.cancels = append(o.cancels, k)
		o.keep.Add(int(sh))
	}
}

// Remove ends every want of the subscription, reports the keys nobody wants
// any more to the cancel function, and closes Messages(); messages not yet
// received are dropped. When Remove returns, Messages() is closed and the
// session ID may be reused. Remove is idempotent, safe for concurrent use, and
// blocks only for other operations on the subscription's shards.
func (s *Subscription) Remove() { s.end(nil) }

// end stops s with err, unless it has already stopped, and ends its wants, in
// one critical section over the shards of its keys: no operation sees s
// stopped but still in the index. It returns once out is closed.
func (s *Subscription) end(err error) {
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	s.lockAll(o)
	stopped := s.stop(err)
	exited := s.exited
	for k := range s.keys {
		s.unindex(o, k, n.shardOf(k))
	}
	clear(s.keys)
	n.forget(s) // NOTE: n.mu under shard locks and s.mu; n.mu is a leaf
	s.mu.Unlock()
	n.finish(o)
	if stopped && exited != nil {
		<-exited // drain has seen quit and closed out; it needs no lock we hold
	}
}

// lockAll takes the shard locks of every key of s, then s.mu. A Subscribe may
// add a key in another shard between computing the set and locking it; then
// it starts over with the larger set. That converges: keys are added only
// under their shard's lock, which lockAll holds once the set covers them.
func (s *Subscription) lockAll(o *op) {
	n := s.n
	for {
		s.mu.Lock()
		covered := true
		for k := range s.keys {
			if sh := int(n.shardOf(k)); !o.locks.Has(sh) {
				o.locks.Add(sh)
				covered = false
			}
		}
		if covered && o.locked {
			return
		}
		s.mu.Unlock()
		if o.locked {
			n.unlock(o.locks)
		}
		n.lock(o.locks)
		o.locked = true
	}
}

// stop marks s ended with err and closes out, or has drain close it. The
// caller holds s.mu. It reports whether s was still live.
func (s *Subscription) stop(err error) bool {
	if s.done {
		return false
	}
	s.done, s.err = true, err
	s.backlog.Reset()
	if s.draining {
		close(s.quit)
	} else {
		close(s.out)
	}
	return true
}

// accept takes a message for s: the wants its blocks satisfy end, and it goes
// to out at once if out has room and nothing is queued before it, else to the
// backlog. The caller holds s.mu. It reports whether the message is the one
// that overflowed WithMaxPending: the caller must then end s with
// ErrSlowConsumer once its own locks are released. Messages for s between the
// overflow and the end are dropped; Err reports it.
func (s *Subscription) accept(m ResponseMessage) (overflowed bool) {
	for _, b := range m.Blocks {
		delete(s.keys, b.Cid())
	}
	if s.done || s.overflow {
		return false
	}
	if s.fn != nil {
		s.fn(m)
		return false
	}
	if !s.draining {
		select {
		case s.out <- m:
			return false
		default:
		}
	}
	if max := s.n.cfg.maxPending; max > 0 && s.backlog.Len() >= max {
		s.overflow = true
		return true
	}
	s.backlog.Push(m)
	if !s.draining {
		s.draining = true
		s.exited = make(chan struct{})
		s.n.drainers.Add(1)
		go s.drain(s.exited)
	}
	return false
}

// drain moves the backlog into out, blocking on out, until the backlog is
// empty or s stops. While it runs it is out's only sender, which keeps
// publish order; when s has stopped it closes out. It closes exited when it
// returns. The message it holds while blocked on out has left the backlog:
// WithMaxPending counts the messages queued behind it.
func (s *Subscription) drain(exited chan struct{}) {
	defer s.n.drainers.Done()
	defer close(exited)
	for {
		s.mu.Lock()
		if s.done {
			s.draining = false
			close(s.out)
			s.mu.Unlock()
			return
		}
		m, ok := s.backlog.Pop()
		if !ok {
			s.draining = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		select {
		case s.out <- m:
		case <-s.quit:
		}
	}
}
