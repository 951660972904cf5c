package swapsim

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// sim is one run: the client under test, the world around it, and the
// checker that watches both.
type sim struct {
	cfg   *Config
	impl  Impl
	bs    notifier.Blockstore // the recording store the client uses
	truth notifier.Blockstore // the store under the faults, for the checks
	fault *faultbs.Store      // injects Config.Faults into bs
	chk   *checker
	net   *network
	reg   registry
	ctr   counters
	lat   histogram
	reqs  atomic.Uint64 // request IDs

	epoch time.Time       // the sim clock's zero
	bg    context.Context // for calls into the client, which outlive the load phase
}

// counters are the run's tallies, updated atomically.
type counters struct {
	requests, completed, cancelled, stalled atomic.Int64
	cutShort                                atomic.Int64 // requests failed: a GetBlocks channel closed early
	blocks, haves, dontHaves                atomic.Int64 // read by sessions
	messages                                atomic.Int64 // handed to the client
	wants, dropped, localAdds, junk         atomic.Int64
	retries, resent                         atomic.Int64 // Wants retried, messages sent again
}

func newSim(cfg *Config, inner notifier.Blockstore, f Factory) *sim {
	s := &sim{cfg: cfg, epoch: time.Now(), bg: context.Background()}
	s.chk = newChecker(false)
	s.truth, s.fault = inner, faultbs.New(inner)
	s.fault.SetRandom(faultbs.Random{P: cfg.Faults, Delay: cfg.FaultStall, Seed: cfg.Seed})
	s.bs = recordingStore{Blockstore: s.fault, chk: s.chk}
	s.impl = f(s.bs, s.chk.cancel)
	s.chk.syncEnds = s.impl.SyncCancels()
	if e, ok := s.impl.(wantEpochs); ok {
		s.chk.epochs = e.WantEpochs()
	}
	s.net = newNetwork(s)
	return s
}

// now is the sim clock, in nanoseconds; it is never 0.
func (s *sim) now() int64 { return int64(time.Since(s.epoch)) + 1 }

// receive hands msg to the client, between PUB-START and PUB-END. It
// returns true if the client failed to store the message's blocks because of
// an injected fault: then nothing of it reached the sessions, and its sender
// is to send it again. Any other error is a violation.
func (s *sim) receive(msg notifier.ResponseMessage) (again bool) {
	s.chk.pubStart(msg.Blocks, msg.From == "", s.now())
	err := s.impl.Receive(s.bg, msg)
	s.chk.pubEnd(msg.Blocks)
	s.ctr.messages.Add(1)
	switch {
	case err == nil:
	case errors.Is(err, faultbs.ErrInjected):
		return !s.cfg.broken.noResend
	default:
		s.chk.violate(ImplError, "receive from %q: %v", msg.From, err)
	}
	return false
}

// load runs the sessions until cfg.Duration has passed (or ctx is done) and
// every request in flight has ended. It returns the counts at the end of the
// load phase (the rates' numerators: the drain after it runs fewer requests),
// and how long the whole took.
func (s *sim) load(ctx context.Context) (atEnd loadMark, total time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Duration)
	defer cancel()
	marked := make(chan struct{})
	context.AfterFunc(ctx, func() {
		atEnd = s.mark(start)
		close(marked)
	})
	var wg sync.WaitGroup
	for i := range s.cfg.Sessions {
		w := newWorker(s, uint64(i+1))
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	cancel()
	<-marked
	return atEnd, time.Since(start)
}

// loadMark is what the load phase delivered, and how long it lasted.
type loadMark struct {
	elapsed                            time.Duration
	blocks, messages, haves, dontHaves int64
}

func (s *sim) mark(start time.Time) loadMark {
	return loadMark{
		elapsed: time.Since(start), blocks: s.ctr.blocks.Load(), messages: s.ctr.messages.Load(),
		haves: s.ctr.haves.Load(), dontHaves: s.ctr.dontHaves.Load(),
	}
}

// worker is one session slot: it fetches one DAG after another, each in a new
// session with the worker's session ID (so IDs are reused).
type worker struct {
	s     *sim
	id    uint64
	rng   *rand.Rand
	n     uint64 // DAGs made
	stall *time.Timer
}

func newWorker(s *sim, id uint64) *worker {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &worker{s: s, id: id, rng: rand.New(rand.NewPCG(s.cfg.Seed, id)), stall: t}
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.fetch()
	}
}

// freshDAG makes a DAG that nobody has fetched; its ID and shape depend only
// on the seed, the worker and how many DAGs the worker made.
func (w *worker) freshDAG() *dag {
	w.n++
	id := w.id<<32 | w.n
	return newDAG(id, rand.New(rand.NewPCG(w.s.cfg.Seed, id)), w.s.cfg)
}

const (
	stNone   uint8 = iota // not asked for yet
	stWanted              // asked for, not received
	stGot                 // received
)

// request is one DAG fetch, in one session.
type request struct {
	id       uint64
	dag      *dag
	state    []uint8 // per node
	subAt    []int64 // per node: SUB-START
	received int
	// cancelAt > 0 cancels the request once that many blocks arrived, by
	// Cancel then Close, or by Close alone if viaClose.
	cancelAt  int
	viaClose  bool
	ended     bool // cancelled, stalled or failed: no more wants
	cancelled bool
	// cut is where the client reports a GetBlocks call that its PubSub
	// ended early (see cutShort); shortened is set once await has read it.
	cut       chan struct{}
	shortened bool
}

func (w *worker) newRequest(d *dag) *request {
	r := &request{
		id:    w.s.reqs.Add(1),
		dag:   d,
		state: make([]uint8, len(d.nodes)),
		subAt: make([]int64, len(d.nodes)),
		cut:   make(chan struct{}, 1),
	}
	if len(d.nodes) > 1 && w.rng.Float64() < w.s.cfg.Cancel {
		r.cancelAt = 1 + w.rng.IntN(len(d.nodes)-1)
		r.viaClose = w.rng.IntN(2) == 0
	}
	return r
}

// cancelDue reports whether the request is to be cancelled now.
func (r *request) cancelDue() bool {
	return r.cancelAt > 0 && !r.ended && r.received >= r.cancelAt && r.received < len(r.dag.nodes)
}

// keys returns the keys of the nodes in state st.
func (r *request) keys(st ...uint8) []cid.Cid {
	var out []cid.Cid
	for i, s := range r.state {
		for _, t := range st {
			if s == t {
				out = append(out, r.dag.nodes[i].blk.Cid())
			}
		}
	}
	return out
}

// fetch runs one request from its session's start to its close.
func (w *worker) fetch() {
	d := w.s.reg.acquire(w.rng, w.s.cfg, w.freshDAG)
	req := w.newRequest(d)
	w.s.ctr.requests.Add(1)
	sess, err := w.s.impl.NewSession(w.id)
	if err != nil {
		w.s.chk.violate(ImplError, "new session %d: %v", w.id, err)
		w.s.reg.release(d, false)
		return
	}
	if w.want(sess, req, []int32{0}) {
		w.await(sess, req)
	}
	w.close(sess, req)
	w.s.reg.release(d, req.received == len(d.nodes))
	if !req.cancelled && !req.shortened && req.received < len(d.nodes) {
		w.s.chk.violate(Incomplete, "request %d: %d of %d blocks, not cancelled", req.id, req.received, len(d.nodes))
	}
}

// await reads the session until the DAG is complete, the request is
// cancelled, or it stalls.
func (w *worker) await(sess Session, req *request) {
	w.stall.Reset(w.s.cfg.Stall)
	defer w.stall.Stop()
	for req.received < len(req.dag.nodes) && !req.ended {
		select {
		case m, ok := <-sess.Incoming():
			if !ok {
				w.s.chk.violate(ImplError, "request %d: session channel closed", req.id)
				req.ended = true
				return
			}
			if w.take(sess, req, m) {
				w.stall.Reset(w.s.cfg.Stall)
			}
			if req.cancelDue() {
				w.cancel(sess, req)
			}
		case <-req.cut:
			req.ended, req.shortened = true, true
			w.s.ctr.cutShort.Add(1)
		case <-w.stall.C:
			w.stalled(req)
		}
	}
	if req.received == len(req.dag.nodes) {
		w.s.ctr.completed.Add(1)
	}
}

// take handles one message; it reports whether it brought a new block.
func (w *worker) take(sess Session, req *request, m notifier.ResponseMessage) bool {
	var next []int32
	progress := false
	for _, b := range m.Blocks {
		if !w.block(req, b.Cid()) {
			continue
		}
		progress = true
		kids, err := decodeChildren(b.RawData())
		if err != nil {
			w.s.chk.violate(ImplError, "request %d: block %s: %v", req.id, b.Cid(), err)
			continue
		}
		for _, k := range kids {
			if j, ok := req.dag.index[k]; ok && req.state[j] == stNone {
				next = append(next, j)
			}
		}
	}
	w.infos(req, m.Haves, &w.s.ctr.haves)
	w.infos(req, m.DontHaves, &w.s.ctr.dontHaves)
	if len(next) > 0 && !req.ended {
		w.want(sess, req, next)
	}
	return progress
}

// block checks and records the arrival of k's block; it reports whether the
// block is new to the request.
func (w *worker) block(req *request, k cid.Cid) bool {
	i, ok := req.dag.index[k]
	switch {
	case !ok || req.state[i] == stNone:
		w.s.chk.violate(UnexpectedKey, "request %d: block %s, never asked for", req.id, k)
		return false
	case req.state[i] == stGot:
		w.s.chk.violate(DuplicateBlock, "request %d: block %s twice", req.id, k)
		return false
	}
	req.state[i] = stGot
	req.received++
	w.s.ctr.blocks.Add(1)
	first, stored := w.s.chk.delivered(req.id, k)
	if !stored {
		if has, err := w.s.truth.Has(w.s.bg, k); err != nil || !has {
			w.s.chk.violate(NotStored, "request %d: block %s not in the blockstore (err %v)", req.id, k, err)
		}
	}
	w.s.lat.record(w.s.now() - max(first, req.subAt[i]))
	return true
}

// infos checks the keys of HAVEs or DONT_HAVEs and counts them.
func (w *worker) infos(req *request, keys []cid.Cid, n *atomic.Int64) {
	for _, k := range keys {
		if i, ok := req.dag.index[k]; !ok || req.state[i] == stNone {
			w.s.chk.violate(UnexpectedKey, "request %d: HAVE or DONT_HAVE for %s, never asked for", req.id, k)
		}
	}
	n.Add(int64(len(keys)))
}

// want subscribes req to the nodes idx and sends their WANTs; it reports
// whether the request goes on. If Want fails because of an injected fault,
// the request wants each node on its own, each retried after retryDelay for
// up to Config.Stall: a client that falls back to one block at a time, so
// that one failing key does not hold the others back.
func (w *worker) want(sess Session, req *request, idx []int32) bool {
	now := w.s.now()
	for _, i := range idx {
		req.state[i], req.subAt[i] = stWanted, now
	}
	err := w.subscribe(sess, req, idx)
	if err == nil {
		return true
	}
	for j := range idx {
		one := idx[j : j+1]
		if j > 0 {
			err = w.subscribe(sess, req, one)
		}
		if err = w.wantAgain(sess, req, one, err); err != nil {
			w.s.chk.violate(ImplError, "request %d: want %d of %d keys: %v", req.id, len(idx)-j, len(idx), err)
			req.ended = true
			return false
		}
	}
	return true
}

// wantAgain repeats a Want of the nodes idx that failed with err until it
// succeeds or retry gives up; it returns the last error.
func (w *worker) wantAgain(sess Session, req *request, idx []int32, err error) error {
	for start := time.Now(); err != nil; err = w.subscribe(sess, req, idx) {
		if !w.retry(err, start) {
			return err
		}
	}
	return nil
}

// subscribe calls Want for the nodes idx, between SUB-START and SUB-RETURN,
// and sends their WANTs if it succeeded.
func (w *worker) subscribe(sess Session, req *request, idx []int32) error {
	d := req.dag
	keys := make([]cid.Cid, len(idx))
	for j, i := range idx {
		keys[j] = d.nodes[i].blk.Cid()
	}
	sent, gens := make([]bool, len(keys)), make([]uint32, len(keys))
	w.s.chk.subStart(req.id, keys, sent)
	ctx, checks := withWantCheck(w.s.bg)
	ctx = withCutShort(ctx, func(keys []cid.Cid) { w.cutShort(req, keys) })
	err := sess.Want(ctx, keys)
	w.s.chk.subReturn(req.id, keys, err == nil, sent, gens)
	if err != nil {
		return err
	}
	w.ignoredChecks(req, keys, checks)
	w.s.chk.found(checks.foundKeys())
	for j, i := range idx {
		if sent[j] {
			w.s.ctr.wants.Add(1)
			due := w.s.net.want(w.rng, d.nodes[i], gens[j])
			w.addLocally(d, d.nodes[i], due)
		}
	}
	return nil
}

// ignoredChecks flags the keys whose last blockstore check by a Want that
// returned nil failed: a failed check must fail the call (SPEC, Subscribe;
// Fetch's doc), or the client waits for a block that its store may hold. A
// client that takes a failed check for a miss, as legacy does, never passes
// the Want's context to its blockstore, and escapes this check. It rests on
// the driver's own rule that a session has at most one Want of a key at a
// time: a Want of a key that its session already wants is a no-op (SPEC,
// Subscribe), which may rightly return nil after its check failed, if a
// concurrent Want recorded the key meanwhile.
func (w *worker) ignoredChecks(req *request, keys []cid.Cid, checks *wantCheck) {
	for _, k := range keys {
		if checks.lastFailed(k) {
			w.s.chk.violate(ImplError, "request %d: Want returned nil though its blockstore check of %s failed", req.id, k)
		}
	}
}

// retryDelay is how long a request waits before it repeats a Want that
// failed: a client that gets an error from its blockstore check tries again
// (see doc.go, "Faults").
const retryDelay = time.Millisecond

// retry reports whether a Want that failed with err is to be tried again,
// the first attempt having started at start; if so, it waits retryDelay.
func (w *worker) retry(err error, start time.Time) bool {
	if !errors.Is(err, faultbs.ErrInjected) || w.s.cfg.broken.noRetry || time.Since(start) > w.s.cfg.Stall {
		return false
	}
	w.s.ctr.retries.Add(1)
	time.Sleep(retryDelay) // a backoff: there is nothing to wait for
	return true
}

// addLocally schedules the local adds that a WANT for nd sets off: the
// blocks that only a local add provides, at about the time nd's children are
// subscribed, and by chance a child that peers have too, to race its
// Subscribe.
func (w *worker) addLocally(d *dag, nd *node, due time.Duration) {
	net, cfg := w.s.net, w.s.cfg
	jitter := func() time.Duration { return time.Duration(w.rng.Int64N(int64(cfg.LocalJitter) + 1)) }
	for _, c := range nd.children {
		if ch := d.nodes[c]; ch.holders == 0 && ch.addQueued.CompareAndSwap(false, true) {
			net.addLocal(due+jitter(), ch.blk)
		}
	}
	if len(nd.children) > 0 && w.rng.Float64() < cfg.LocalAdd {
		net.addLocal(due+jitter(), d.nodes[nd.children[w.rng.IntN(len(nd.children))]].blk)
	}
	if nd.holders == 0 && nd.addQueued.CompareAndSwap(false, true) {
		net.addLocal(net.latency(w.rng), nd.blk)
	}
}

// cancel ends the request midway; Close follows.
func (w *worker) cancel(sess Session, req *request) {
	req.ended, req.cancelled = true, true
	w.s.ctr.cancelled.Add(1)
	if req.viaClose {
		return
	}
	keys := req.keys(stWanted)
	w.s.chk.endStart(req.id, keys)
	sess.Cancel(keys)
	if w.s.impl.SyncCancels() {
		w.s.chk.endReturn(req.id, keys)
	}
}

// cutShort is told, on the client's goroutine, that the GetBlocks call of a
// Want of req ended with keys still missing, its channel closed by the
// PubSub, not by the request's context nor the session's Close: compat's
// PubSub ends the calls that wait for the blocks of a message whose store
// failed, and so fails the request, as boxo's block service fails a
// GetBlocks whose PutMany fails. The client's CANCELs of keys come after
// this, so the checker first learns that req's wants of them end (a CANCEL
// of a key whose want was cut short is no stale cancel). The request then
// fails: its caller gets an error, and the driver counts it apart from the
// requests that stalled, as a caller of boxo's block service sees it.
func (w *worker) cutShort(req *request, keys []cid.Cid) {
	w.s.chk.endStart(req.id, keys)
	select {
	case req.cut <- struct{}{}:
	default: // reported already
	}
}

// stalled ends a request that nothing reached for cfg.Stall.
func (w *worker) stalled(req *request) {
	req.ended = true
	w.s.ctr.stalled.Add(1)
	for _, k := range req.keys(stWanted) {
		w.s.chk.violate(LostBlock, "request %d (%d of %d blocks): %s never arrived", req.id, req.received, len(req.dag.nodes), k)
	}
}

// close closes the request's session: every want it has left ends.
func (w *worker) close(sess Session, req *request) {
	keys := req.keys(stWanted, stGot)
	w.s.chk.endStart(req.id, keys)
	sess.Close()
	w.s.chk.endReturn(req.id, keys)
}
