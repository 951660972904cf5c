package swapsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
)

// fetchImpl is the Notifier as a fork's block service uses it for GetBlock
// beside its sessions: a session's Want of one key (a root, a node with one
// child, each key of the fallback after a failed check) is a Notifier.Fetch,
// one request per call, and a Want of several keys is a Subscribe of the
// session's subscription. Both take their messages through delivery
// functions (NewSubscriptionFunc, Fetch's newFunc), which run under the
// Notifier's locks and must not block: they append to the session's mailbox,
// and one goroutine per session feeds Incoming from it. The channel path,
// Messages, is notifierImpl's.
//
// The tempting shortcut, a delivery function that sends on the session's
// channel, deadlocks: the driver calls Want, and so Fetch and Subscribe, from
// the loop that reads that channel, and a Publish that delivers to the
// session holds shard locks that the Want waits for.
type fetchImpl struct {
	n   *notifier.Notifier
	ctr fetchCounts
}

// fetchCounts are the outcomes of Fetch, for Report.
type fetchCounts struct {
	hits     atomic.Int64 // Fetch returned the block
	requests atomic.Int64 // Fetch returned a request
	early    atomic.Int64 // of those, the block reached the request before Fetch returned
}

// fetcher is an Impl that counts the outcomes of its Fetch calls.
type fetcher interface {
	fetchCounts() (hits, requests, early int64)
}

func newFetchImpl(bs notifier.Blockstore, cancel func([]cid.Cid)) Impl {
	return &fetchImpl{n: notifier.New(bs, notifier.WithCancelFunc(cancel))}
}

func (m *fetchImpl) fetchCounts() (hits, requests, early int64) {
	return m.ctr.hits.Load(), m.ctr.requests.Load(), m.ctr.early.Load()
}

// NewSession starts the session's subscription and the goroutine that feeds
// Incoming from its mailbox; Close stops it.
func (m *fetchImpl) NewSession(id uint64) (Session, error) {
	s := &fetchSession{
		m:    m,
		reqs: make(map[cid.Cid]*fetchRequest),
		out:  make(chan notifier.ResponseMessage),
		done: make(chan struct{}),
	}
	s.box.wake = make(chan struct{}, 1)
	sub, err := m.n.NewSubscriptionFunc(id, s.box.put)
	if err != nil {
		return nil, err
	}
	s.sub = sub
	s.wg.Go(s.forward)
	return s, nil
}

func (m *fetchImpl) Receive(ctx context.Context, msg notifier.ResponseMessage) error {
	return m.n.Publish(ctx, msg)
}

// Interest counts every live request as a subscription: a session must have
// removed them all by the time it is closed.
func (m *fetchImpl) Interest() notifier.Stats { return m.n.Stats() }

func (*fetchImpl) SyncCancels() bool { return true }
func (m *fetchImpl) Close() error    { return m.n.Close() }

// fetchSession is one session of fetchImpl. The driver calls Want, Cancel
// and Close from one goroutine, which alone touches sub and reqs.
type fetchSession struct {
	m    *fetchImpl
	sub  *notifier.Subscription    // the Wants of several keys
	reqs map[cid.Cid]*fetchRequest // the requests not removed yet, by key
	box  mailbox
	out  chan notifier.ResponseMessage // Incoming: unbuffered, fed by forward
	done chan struct{}                 // closed by Close: forward returns
	wg   sync.WaitGroup
}

// fetchRequest is one Fetch that returned a request. The driver wants a key
// once per session, so a session has at most one request per key.
type fetchRequest struct {
	key      cid.Cid
	sub      *notifier.Subscription // set once Fetch returned it; read by the driver's goroutine only
	returned atomic.Bool            // Fetch has returned
}

// errFetchEmpty is a Fetch that returned neither a block nor a request, nor
// an error.
var errFetchEmpty = errors.New("swapsim: Fetch returned no block, no request and no error")

// Want fetches one key, or subscribes several. It first removes the
// requests whose block has arrived: their want has ended, and a request is a
// live subscription until removed.
func (s *fetchSession) Want(ctx context.Context, keys []cid.Cid) error {
	s.sweep()
	if len(keys) != 1 {
		return s.sub.Subscribe(ctx, keys...)
	}
	return s.fetch(ctx, keys[0])
}

// fetch is one GetBlock: a block found is handed to the session as a
// message, like any other; a request is kept until its block arrives or the
// session ends it.
func (s *fetchSession) fetch(ctx context.Context, k cid.Cid) error {
	r := &fetchRequest{key: k}
	blk, sub, err := s.m.n.Fetch(ctx, k, func() func(notifier.ResponseMessage) { return s.deliverTo(r) })
	r.returned.Store(true)
	switch {
	case err != nil:
		return err
	case blk != nil && sub != nil:
		sub.Remove()
		return fmt.Errorf("swapsim: Fetch of %s returned both a block and a request", k)
	case blk != nil:
		s.m.ctr.hits.Add(1)
		noteFound(ctx, k)
		s.box.put(notifier.ResponseMessage{Blocks: []blocks.Block{blk}})
		return nil
	case sub == nil:
		return errFetchEmpty
	}
	s.m.ctr.requests.Add(1)
	r.sub = sub
	s.reqs[k] = r
	return nil
}

// deliverTo returns the delivery function of r: it queues the message and,
// if it carries r's block, r, for sweep to remove. It runs under the
// Notifier's locks (see NewSubscriptionFunc), and never blocks.
func (s *fetchSession) deliverTo(r *fetchRequest) func(notifier.ResponseMessage) {
	return func(msg notifier.ResponseMessage) {
		if len(msg.Blocks) > 0 && !r.returned.Load() {
			s.m.ctr.early.Add(1)
		}
		s.box.putFrom(msg, r)
	}
}

// sweep removes the requests whose block has arrived. Their want has ended,
// so Remove ends none and reports nothing to the cancel function. A request
// whose block reached it before Fetch returned it is removed here too, after
// fetch has recorded it.
func (s *fetchSession) sweep() {
	for _, r := range s.box.takeGot() {
		if s.reqs[r.key] == r {
			delete(s.reqs, r.key)
			r.sub.Remove()
		}
	}
}

// Cancel ends the wants of keys before it returns: it removes their
// requests and unsubscribes the others.
func (s *fetchSession) Cancel(keys []cid.Cid) {
	s.sweep()
	var rest []cid.Cid
	for _, k := range keys {
		if r := s.reqs[k]; r != nil {
			delete(s.reqs, k)
			r.sub.Remove()
			continue
		}
		rest = append(rest, k)
	}
	if len(rest) > 0 {
		s.sub.Unsubscribe(rest...)
	}
}

func (s *fetchSession) Incoming() <-chan notifier.ResponseMessage { return s.out }

// Close removes every request and the subscription, so that no want is left
// when it returns, then stops the forwarder; what the mailbox still holds is
// dropped, as a closed session's messages are.
func (s *fetchSession) Close() {
	for k, r := range s.reqs {
		delete(s.reqs, k)
		r.sub.Remove()
	}
	s.sub.Remove()
	close(s.done)
	s.wg.Wait()
}

// forward feeds Incoming from the mailbox, in the order of the mailbox,
// until Close.
func (s *fetchSession) forward() {
	for {
		select {
		case <-s.box.wake:
		case <-s.done:
			return
		}
		for _, msg := range s.box.take() {
			select {
			case s.out <- msg:
			case <-s.done:
				return
			}
		}
	}
}

// mailbox is an unbounded queue of messages: delivery functions fill it
// without blocking, under the Notifier's locks, and one goroutine drains it.
type mailbox struct {
	mu   sync.Mutex // guards msgs and got; held only to append or to take them, never across a send
	msgs []notifier.ResponseMessage
	got  []*fetchRequest // requests whose block arrived, not yet swept
	wake chan struct{}   // capacity 1: a token whenever msgs grew
}

// put queues msg and leaves a token in wake, unless one is there already.
func (b *mailbox) put(msg notifier.ResponseMessage) { b.putFrom(msg, nil) }

// putFrom is put for a message that r's delivery function received: if it
// carries a block, r's want has ended, and r goes to got.
func (b *mailbox) putFrom(msg notifier.ResponseMessage, r *fetchRequest) {
	b.mu.Lock()
	b.msgs = append(b.msgs, msg)
	if r != nil && len(msg.Blocks) > 0 {
		b.got = append(b.got, r)
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default: // a token is there: the forwarder will take msg with the others
	}
}

// take returns the queued messages and empties the queue.
func (b *mailbox) take() []notifier.ResponseMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	msgs := b.msgs
	b.msgs = nil
	return msgs
}

// takeGot returns the requests whose block arrived since the last call.
func (b *mailbox) takeGot() []*fetchRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := b.got
	b.got = nil
	return got
}
