package notifier

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Publish order (G6) as a client that reads a subscription's wants sees it.
// AppendWanted takes the subscription's lock alone and answers with one
// snapshot: an operation it sees done has queued its message to the
// subscription. So a client that sees an operation O done for s, and then
// calls an operation N that reaches s, must find that s receives O's message
// before N's. Two bugs broke that while O waited for the lock of another
// target u: route ended the wants before it locked the targets
// (TestRoute_WantEndsOnlyWithItsMessage), and a Subscribe that found a block
// u wants recorded s's wants before it locked them (lockShared;
// TestSubscribe_FoundSharedBlockIsQueuedWithTheWants). The linearizability
// test checks the same law, but its clients seldom meet in that window
// (lin_read_test.go).
//
// Each round of TestPublishOrder_OperationSeenDoneComesFirst puts O in the
// window, then checks the law whatever happened. A holder publishes a HAVE to
// u, whose delivery function keeps u locked until the client has called N (or
// for orderHoldYields yields). Meanwhile O locks its targets: O is a Publish
// of the block j, which u and s want, or a Subscribe by s of j, stored behind
// the Notifier's back while u wants it, alone or with k1, a key not stored.
// The client reads s's wants of O's keys until they differ from before O (or
// O returns, or after orderReads reads), then calls N, which reaches s: a
// HAVE or the block of x, which s wants, or a Subscribe by s of y, stored.
// The round's seed draws its shape: which O and N, whether s takes its
// messages through a function or its channel, whether u or s comes first in
// the lock order (u first leaves s free while O waits for u), and whether the
// holder holds.
const (
	orderReads      = 1000  // the client's reads of s's wants, at most, before it calls N
	orderHoldYields = 20000 // how long u's delivery function holds u's lock, at most
)

type orderOp uint8

const (
	orderPublish      orderOp = iota // O = Publish(block j); u and s want j
	orderSubscribe                   // O = s.Subscribe(j); j stored, u wants j
	orderSubscribeTwo                // O = s.Subscribe(k1, j); k1 not stored
)

type orderNext uint8

const (
	orderHave  orderNext = iota // N = Publish(HAVE x); s wants x
	orderBlock                  // N = Publish(block x); s wants x
	orderHit                    // N = s.Subscribe(y); y stored
)

// orderRound is one round: its shape, drawn from the round's seed, its
// Notifier and keys, and what s received through its function.
type orderRound struct {
	seed   uint64
	op     orderOp
	next   orderNext
	local  bool // the Publish of O or N is local
	sFunc  bool // s takes its messages through a function, else its channel
	sFirst bool // s comes before u in the lock order
	hold   bool // the holder holds u's lock while O runs

	n               *Notifier
	u, s            *Subscription
	j, k1, x, y, h  blocks.Block      // O's key, O's key not stored, N's key, N's stored key, the holder's key
	before          []cid.Cid         // s's wants of O's keys before O
	holding, called chan struct{}     // closed by u's function as it holds u's lock; by the client once N returned
	got             []ResponseMessage // what s received through its function
}

// TestPublishOrder_OperationSeenDoneComesFirst runs the rounds of a stress
// loop (stressing), from a seed that it logs.
func TestPublishOrder_OperationSeenDoneComesFirst(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	deadline := time.Now().Add(stressFor)
	rounds, seen := 0, 0
	for ; stressing(rounds, deadline); rounds++ {
		if runOrderRound(t, seed+uint64(rounds)) {
			seen++
		}
	}
	t.Logf("%d rounds (seeds from %d), %d in which the client saw O done before it called N", rounds, seed, seen)
}

// runOrderRound runs the round of seed and checks it; it reports whether the
// client saw O done.
func runOrderRound(t *testing.T, seed uint64) (seen bool) {
	r := newOrderRound(t, seed)
	defer func() { require.NoError(t, r.n.Close()) }()
	held := make(chan error, 1)
	if r.hold {
		go func() { held <- r.n.Publish(ctx, ResponseMessage{From: "holder", Haves: []cid.Cid{r.h.Cid()}}) }()
		done(t, r.holding, "u's delivery function")
	} else {
		held <- nil
	}
	var opErr error
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		opErr = r.callOp()
	}()
	seen = r.read(returned)
	require.NoError(t, r.callNext(), "%v: N", r)
	close(r.called)
	require.NoError(t, <-held, "%v: the holder", r)
	done(t, returned, "O")
	require.NoError(t, opErr, "%v: O", r)
	r.check(t, seen)
	return seen
}

// newOrderRound draws the round of seed and sets it up: a fresh Notifier,
// u and s with their wants, and the blocks stored behind its back.
func newOrderRound(t *testing.T, seed uint64) *orderRound {
	rng := rand.New(rand.NewPCG(seed, 0))
	r := &orderRound{
		seed: seed, op: orderOp(rng.IntN(3)), next: orderNext(rng.IntN(3)),
		local: rng.IntN(2) == 0, sFunc: rng.IntN(2) == 0, sFirst: rng.IntN(8) == 0, hold: rng.IntN(8) > 0,
		holding: make(chan struct{}), called: make(chan struct{}),
	}
	bs := memStore()
	r.n = New(bs)
	ks := blocksInDistinctShards(r.n, fmt.Sprintf("order/%d", seed), 5)
	r.j, r.k1, r.x, r.y, r.h = ks[0], ks[1], ks[2], ks[3], ks[4]
	r.subscribe(t)
	if r.op != orderPublish {
		require.NoError(t, bs.PutMany(ctx, []blocks.Block{r.j}))
	}
	if r.next == orderHit {
		require.NoError(t, bs.PutMany(ctx, []blocks.Block{r.y}))
	}
	r.before = r.s.AppendWanted(nil, r.opKeys())
	return r
}

// subscribe makes u and s, in the round's lock order, and records their
// wants: u wants j and the holder's key; s wants j if O publishes it, and x.
func (r *orderRound) subscribe(t *testing.T) {
	hold := func(m ResponseMessage) {
		if slices.Contains(m.Haves, r.h.Cid()) {
			r.holdU()
		}
	}
	var err error
	newS := func() {
		if r.sFunc {
			r.s, err = r.n.NewSubscriptionFunc(2, func(m ResponseMessage) { r.got = append(r.got, m) })
		} else {
			r.s, err = r.n.NewSubscription(2)
		}
		require.NoError(t, err)
	}
	if r.sFirst {
		newS()
	}
	r.u, err = r.n.NewSubscriptionFunc(1, hold)
	require.NoError(t, err)
	if !r.sFirst {
		newS()
	}
	require.NoError(t, r.u.Subscribe(ctx, r.j.Cid(), r.h.Cid()))
	require.NoError(t, r.s.Subscribe(ctx, r.x.Cid()))
	if r.op == orderPublish {
		require.NoError(t, r.s.Subscribe(ctx, r.j.Cid()))
	}
}

// holdU is u's delivery function on the holder's HAVE: it holds u's lock
// until the client has called N, or for orderHoldYields yields, which ends
// the round should the client wait for O (s before u in the lock order).
func (r *orderRound) holdU() {
	close(r.holding)
	for range orderHoldYields {
		select {
		case <-r.called:
			return
		default:
			runtime.Gosched()
		}
	}
}

// opKeys are the keys of O whose wants by s the client reads.
func (r *orderRound) opKeys() []cid.Cid {
	if r.op == orderSubscribeTwo {
		return []cid.Cid{r.k1.Cid(), r.j.Cid()}
	}
	return []cid.Cid{r.j.Cid()}
}

func (r *orderRound) from() string {
	if r.local {
		return ""
	}
	return "peer"
}

func (r *orderRound) callOp() error {
	switch r.op {
	case orderSubscribe:
		return r.s.Subscribe(ctx, r.j.Cid())
	case orderSubscribeTwo:
		return r.s.Subscribe(ctx, r.k1.Cid(), r.j.Cid())
	}
	return r.n.Publish(ctx, ResponseMessage{From: r.from(), Blocks: []blocks.Block{r.j}})
}

func (r *orderRound) callNext() error {
	switch r.next {
	case orderHave:
		return r.n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{r.x.Cid()}})
	case orderBlock:
		return r.n.Publish(ctx, ResponseMessage{From: r.from(), Blocks: []blocks.Block{r.x}})
	}
	return r.s.Subscribe(ctx, r.y.Cid())
}

// read reads s's wants of O's keys until they differ from before O, and
// reports whether they did: O has taken effect for s. It gives up after
// orderReads reads, or once O has returned.
func (r *orderRound) read(returned <-chan struct{}) bool {
	for range orderReads {
		if r.seesDone() {
			return true
		}
		select {
		case <-returned:
			return r.seesDone()
		default:
			runtime.Gosched()
		}
	}
	return false
}

func (r *orderRound) seesDone() bool {
	return !slices.Equal(r.s.AppendWanted(nil, r.opKeys()), r.before)
}

// check checks that s received one message of O's key j and one of N's key,
// and j's first if the client saw O done before it called N.
func (r *orderRound) check(t *testing.T, seen bool) {
	t.Helper()
	got := r.got
	if !r.sFunc {
		got = []ResponseMessage{recv(t, r.s), recv(t, r.s)}
		none(t, r.s)
	}
	var keys []cid.Cid
	for _, m := range got {
		keys = append(append(keys, keysOf(m.Blocks)...), m.Haves...)
	}
	nextKey := r.x.Cid()
	if r.next == orderHit {
		nextKey = r.y.Cid()
	}
	require.ElementsMatch(t, []cid.Cid{r.j.Cid(), nextKey}, keys, "%v: s's messages", r)
	require.Len(t, got, 2, "%v: s's messages", r)
	if seen && keys[0] != r.j.Cid() {
		t.Fatalf("%v: the client saw O done in s's wants, then called N, and s received N's message first (G6: publish order)", r)
	}
}

func (r *orderRound) String() string {
	ops := [...]string{"Publish(block j)", "s.Subscribe(j), j stored, u wants j", "s.Subscribe(k1, j), j stored, u wants j"}
	nexts := [...]string{"Publish(HAVE x)", "Publish(block x)", "s.Subscribe(y), y stored"}
	shape := []string{"O = " + ops[r.op], "N = " + nexts[r.next]}
	if r.local && (r.op == orderPublish || r.next == orderBlock) {
		shape = append(shape, "local")
	}
	if r.sFunc {
		shape = append(shape, "s by function")
	}
	if r.sFirst {
		shape = append(shape, "s before u in the lock order")
	}
	if r.hold {
		shape = append(shape, "u held")
	}
	return fmt.Sprintf("round of seed %d (%s)", r.seed, strings.Join(shape, ", "))
}

// blocksInDistinctShards returns count blocks whose keys are in count
// different shards of n, their contents starting with prefix.
func blocksInDistinctShards(n *Notifier, prefix string, count int) []blocks.Block {
	var out []blocks.Block
	taken := make(map[int32]bool)
	for i := 0; len(out) < count; i++ {
		b := blocks.NewBlock(fmt.Appendf(nil, "%s/%d", prefix, i))
		if sh := n.shardOf(b.Cid()); !taken[sh] {
			taken[sh] = true
			out = append(out, b)
		}
	}
	return out
}
