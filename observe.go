package notifier

import (
	"context"
	"errors"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zapcore"
)

// This file holds what Publish and Subscribe report to the operator: the
// metrics of metrics.go, the log lines, and events on the caller's span. The
// operations call these hooks at fixed points; each hook costs one check when
// there is neither a metric nor a recording span to feed.

// log is the logger of the package, "bitswap/notifier" beside boxo's
// "bitswap/client". It logs only what an operator must see, at error level,
// which go-log shows by default: a subscription ended as a slow consumer and
// a blockstore error, each of which fails a request. At debug level it also
// logs one line per Publish and Subscribe that begins (probe.begin: not one
// refused at once, for bad input, Close or an ended ctx).
var log = logging.Logger("bitswap/notifier")

// logCore is log's core, whose Enabled reads the level that
// logging.SetLogLevel sets (an atomic): begin asks it whether debug lines
// are on. log.LevelEnabled answers the same from the same level, through
// two interface assertions (zapcore.LevelOf) that cost a Publish of one
// block about 3% of its time.
var logCore = log.Desugar().Core()

// probe observes one Publish or Subscribe. It lives in the op; its zero value
// observes nothing but the blockstore's error, which is always logged.
type probe struct {
	m     *meters    // nil: no metrics
	span  trace.Span // nil unless the caller's span is recording
	debug bool       // the logger is at debug level
	start time.Time  // when the operation began, if on

	inStore     time.Duration // time in the blockstore's calls
	calledStore bool          // the blockstore was called
	stored      int           // blocks PutMany stored
	handed      int           // blocks Subscribe handed to its own subscription in want, outside o.targets
	unsolicited int           // remote blocks that collect refused
	err         error         // the blockstore's error, unwrapped
	ctxEnded    bool          // err is the operation's ctx ending, not a failure of the blockstore

	// taken is not an observation: it is the failed check that the call took
	// for a miss (WithFailedCheckAsMiss), wrapped, for passTaken. It rides
	// with the probe because the probe goes down every path of the call.
	taken error
}

// forgetFailure forgets the blockstore's failure of a Get that the call
// makes again, or finds it need not make: it was not the call's.
func (p *probe) forgetFailure() { p.err, p.ctxEnded, p.taken = nil, false, nil }

// begin starts p for an operation of n under ctx. Without metrics, a
// recording span or debug logging, this is all that the operation pays.
func (p *probe) begin(n *Notifier, ctx context.Context) {
	span := trace.SpanFromContext(ctx)
	recording := span.IsRecording()
	debug := logCore.Enabled(zapcore.DebugLevel) // guards the debug line, as boxo's client does (log.LevelEnabled)
	if n.m == nil && !recording && !debug {
		return
	}
	p.m, p.debug = n.m, debug
	if recording {
		p.span = span
	}
	p.start = time.Now()
}

func (p *probe) on() bool { return p.m != nil || p.span != nil || p.debug }

// clock returns the time before a blockstore call, the zero time if p is off.
func (p *probe) clock() time.Time {
	if !p.on() {
		return time.Time{}
	}
	return time.Now()
}

// storeDone records a blockstore call under ctx that began at t (clock) and
// stored stored blocks, or failed with err. It takes no lock and does no
// I/O: the caller may hold shard locks.
func (p *probe) storeDone(ctx context.Context, t time.Time, stored int, err error) {
	if err != nil {
		p.err, p.ctxEnded = err, endedBy(ctx, err)
	}
	if !p.on() {
		return
	}
	p.calledStore = true
	p.inStore += time.Since(t)
	if err == nil {
		p.stored += stored
	}
}

// handedOwn records blocks that Subscribe found and handed to its own
// subscription directly (Subscription.want).
func (p *probe) handedOwn(blocks int) { p.handed += blocks }

// collected counts the remote blocks of msg that collect refused: nobody
// wants their key, in either map. The caller holds the shard locks of msg's
// keys, as collect does, so the index is as collect saw it.
func (p *probe) collected(n *Notifier, o *op, msg *ResponseMessage) {
	if !p.on() || msg.From == "" || len(o.store) == len(msg.Blocks) {
		return
	}
	for i, b := range msg.Blocks {
		idx := &n.shards[o.keyShards[i]].idx
		if k := b.Cid(); !idx.wanted(k) {
			p.unsolicited++
		}
	}
}

// Operation names, for the log and the span events.
const (
	opPublish   = "Publish"
	opSubscribe = "Subscribe"
)

// done ends p once the operation name has returned, holding no lock: it logs
// a blockstore error, feeds the metrics and adds the operation's event to the
// span. o still holds what the operation delivered.
func (p *probe) done(name string, o *op) {
	if p.err == nil && !p.on() {
		return // end would do nothing: spare the count over the targets
	}
	delivered := p.handed
	for i := range o.targets {
		delivered += o.targets[i].nb
	}
	p.end(name, len(o.resKeys), delivered, len(o.cancels))
}

// end is done for an operation on keys keys that delivered delivered blocks
// and reported cancels keys to the cancel function.
func (p *probe) end(name string, keys, delivered, cancels int) {
	if p.err != nil && !p.ctxEnded {
		log.Errorw("blockstore error", "op", name, "keys", keys, "err", p.err)
		if p.m != nil {
			p.m.bsErrors.Inc()
		}
	}
	if !p.on() {
		return
	}
	took := time.Since(p.start)
	if p.m != nil {
		p.record(name, took, delivered)
	}
	if p.debug {
		log.Debugw(name, "keys", keys, "stored", p.stored, "delivered", delivered,
			"unsolicited", p.unsolicited, "cancels", cancels, "took", took, "blockstore", p.inStore)
	}
	if p.span != nil {
		attrs := []attribute.KeyValue{
			attribute.Int("delivered", delivered),
			attribute.Int64("duration_ns", took.Nanoseconds()),
			attribute.Int64("blockstore_ns", p.inStore.Nanoseconds()),
		}
		if name == opPublish {
			attrs = append(attrs, attribute.Int("stored", p.stored), attribute.Int("unsolicited", p.unsolicited))
		}
		if p.err != nil {
			attrs = append(attrs, attribute.String("error", p.err.Error()))
		}
		p.span.AddEvent("notifier."+name, trace.WithAttributes(attrs...))
	}
}

// record feeds the metrics of one operation.
func (p *probe) record(name string, took time.Duration, delivered int) {
	m := p.m
	total, inStore := m.subscribe, m.subscribeBS
	if name == opPublish {
		total, inStore = m.publish, m.publishBS
		if p.stored > 0 {
			m.stored.Add(float64(p.stored))
		}
		if p.unsolicited > 0 {
			m.unsolicited.Add(float64(p.unsolicited))
		}
	}
	total.Observe(took.Seconds())
	if p.calledStore {
		inStore.Observe(p.inStore.Seconds())
	}
	if delivered > 0 {
		m.delivered.Add(float64(delivered))
	}
}

// endedBy reports whether err, a blockstore call's error, says only that
// ctx, the caller's context, has ended: then the operation was cancelled, and
// nothing failed. A store's own timeout is a failure, though its error wraps
// context.DeadlineExceeded as a cancelled call's does: the caller's ctx is
// still live. (Telling them apart by the error alone, as a first version
// did, kept a datastore's timeouts out of the log and the error count.)
func endedBy(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx)))
}

// handedOver runs at the end of handOver, which every operation that changes the
// index ends with, holding no lock: it reports the subscriptions that o ended
// as slow consumers, counts the keys o reported to the cancel function, and
// refreshes the gauges.
func (n *Notifier) handedOver(o *op) {
	for _, s := range o.slow {
		n.closedSlow(&o.probe, s)
	}
	if m := n.m; m != nil {
		if len(o.cancels) > 0 {
			m.cancels.Add(float64(len(o.cancels)))
		}
		m.refresh(n)
	}
}

// closedSlow reports s, which the operation whose probe is p overflowed and
// closed, as a slow consumer: Err is then ErrSlowConsumer, even if a
// concurrent Remove or Close ended s first (see markClosed). Its backlog was
// full: WithMaxPending messages, besides its channel's buffer.
func (n *Notifier) closedSlow(p *probe, s *Subscription) {
	log.Errorw("subscription ended as a slow consumer", "subscription", s.id, "backlog", n.cfg.maxPending, "buffer", cap(s.out))
	if n.m != nil {
		n.m.slow.Inc()
	}
	if p.span != nil {
		p.span.AddEvent("notifier.SlowConsumer", trace.WithAttributes(
			attribute.Int64("subscription", int64(s.id)),
			attribute.Int("backlog", n.cfg.maxPending)))
	}
}
