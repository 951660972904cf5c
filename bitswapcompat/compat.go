package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	notifier "github.com/bitswapsync/notifier"
)

// BlockWrapper returns what a subscriber receives for block b: b itself, or b
// annotated, e.g. with from (the zero ID for a local block) and the time since
// the subscriber called Subscribe. It runs inside the operation that delivers
// b, under the Notifier's locks: it must be fast, must not block, and must not
// call the PubSub, the SessionInterestManager or their Notifier.
type BlockWrapper func(b blocks.Block, from peer.ID, sinceSubscribe time.Duration) blocks.Block

type config struct {
	wrap   BlockWrapper
	cancel func(keys []cid.Cid)
	onErr  func(error)
	nopts  []notifier.Option
}

// An Option configures a PubSub and, through NewWithOptions, the
// SessionInterestManager that shares its Notifier.
type Option func(*config)

// WithBlockWrapper makes every subscriber receive f(block, from, delay)
// instead of the block. Today's client uses this for tracing: it hands out
// blocks annotated with their sender and the delay since Subscribe. f runs
// in the Notifier's delivery function, under its locks: it must be fast and
// must not panic. A panic goes on to the caller of the PubSub method that
// delivered the block: Publish, or Subscribe when the block was in the
// blockstore (then Subscribe returns no channel). In boxo's client that is
// the goroutine that received the message, so the program ends, as it does
// when boxo's wrapper panics in its pubsub goroutine. A caller that recovers
// finds the Notifier and the PubSub usable
// (notifier.Notifier.NewSubscriptionFunc says how), but the Subscribe call
// whose block f was wrapping never gets it: its channel stays open until its
// context ends or Shutdown.
func WithBlockWrapper(f BlockWrapper) Option {
	return func(c *config) { c.wrap = f }
}

// WithCancelFunc sends the keys that no subscription of the Notifier wants any
// more to f, from inside the operation that ended their last want, exactly as
// notifier.WithCancelFunc does (read its contract: f must be fast, must not
// block, must not call back). Then RemoveSession and RemoveSessionWants return
// no keys (nil, and an empty slice, as boxo's return for none): their keys
// went to f. This is the step that makes a CANCEL unable to
// overtake a newer WANT, and the one to take before moving sessions to the
// native API (see MIGRATION.md). Use it instead of notifier.WithCancelFunc.
// f may run on a goroutine of no caller of the PubSub: a call whose context
// ends is ended by context.AfterFunc's goroutine, and a call that a failed
// store in Publish or PublishMessage ends is ended on a goroutine of its own
// (so that the Publish does not wait for a blockstore call on another of
// its keys); the keys whose last want such an end ends go to f there. A panic of f in that case has no
// caller to go to and ends the program, as any unrecovered panic of a
// goroutine does.
func WithCancelFunc(f func(keys []cid.Cid)) Option {
	return func(c *config) { c.cancel = f }
}

// WithErrorFunc sends f the errors that the boxo-shaped methods cannot return:
// a failed blockstore check in Subscribe (taken for a miss: the call waits for
// the block, as boxo's GetBlocks asks the network for a block whose Get
// failed; with a blockstore the PubSub builds its Notifier with
// notifier.WithFailedCheckAsMiss(f), which replaces one passed in
// WithNotifierOptions), a failed PutMany in Publish (nothing is delivered, and the calls waiting for
// the message's blocks end), and, for the
// SessionInterestManager that NewWithOptions builds with the PubSub,
// an undefined key in RecordSessionInterest (the other keys are recorded).
// A call cut short by its own ctx is not reported; a store's own timeout,
// whose error wraps context.DeadlineExceeded too, is, while ctx is live.
// f runs on the caller's goroutine, outside every lock, but for a failed
// re-check of a call's keys after a failed check (PubSub.Subscribe), which
// runs on a timer's goroutine: a panic of f there ends the program. Without
// it such errors are dropped, and so they are always for a manager built
// alone by NewSessionInterestManager, which takes no options, as boxo's New.
func WithErrorFunc(f func(error)) Option {
	return func(c *config) { c.onErr = f }
}

// WithNotifierOptions passes opts to the Notifier that the PubSub creates.
func WithNotifierOptions(opts ...notifier.Option) Option {
	return func(c *config) { c.nopts = append(c.nopts, opts...) }
}

// New returns a PubSub and a SessionInterestManager backed by one Notifier
// that stores received blocks in bs and checks bs when a key is subscribed;
// with bs == nil it only notifies. The PubSub owns the Notifier: its Shutdown
// closes it. Invalid options panic in New's caller, as notifier's do.
func New(bs notifier.Blockstore, opts ...notifier.Option) (*PubSub, *SessionInterestManager) {
	return NewWithOptions(bs, WithNotifierOptions(opts...))
}

// NewWithOptions is New with this package's options.
func NewWithOptions(bs notifier.Blockstore, opts ...Option) (*PubSub, *SessionInterestManager) {
	cfg := makeConfig(opts)
	ps := newPubSub(bs, cfg)
	return ps, newSessionInterestManager(ps.n, cfg)
}

// NewPubSub returns a PubSub on a Notifier of its own, for a fork that builds
// its pubsub apart from its SessionInterestManager. bs == nil means notify
// only: nothing is stored, nothing is checked on Subscribe.
func NewPubSub(bs notifier.Blockstore, opts ...Option) *PubSub {
	return newPubSub(bs, makeConfig(opts))
}

// NewSessionInterestManager returns a SessionInterestManager on its own: it
// has no PubSub to share wants with, so it records its sessions in a
// notify-only Notifier of its own, where nothing else wants anything, and
// behaves as boxo's. It starts no goroutine and needs no shutdown.
func NewSessionInterestManager() *SessionInterestManager {
	return newSessionInterestManager(notifier.New(nil), config{})
}

// NotifierOf returns the Notifier behind ps, which New also gives to its
// SessionInterestManager. It is how a fork moves to the native API one
// session at a time: a native session subscribes to this Notifier with a
// session ID that the SessionInterestManager does not use. Publish into it
// with PublishMessage. Do not close it: Shutdown does.
func NotifierOf(ps *PubSub) *notifier.Notifier { return ps.n }

// PublishMessage publishes a whole message (blocks, HAVEs and DONT_HAVEs)
// into the Notifier behind ps, as Notifier.Publish does, and then removes the
// subscriptions of the PubSub calls it completed. It is PubSub.Publish for a
// fork that also has native sessions, which want the HAVEs and DONT_HAVEs;
// msg.From is string(peer.ID), "" for a local block. Unlike Publish it
// returns the Notifier's error (ErrClosed after Shutdown). It is safe for
// concurrent use and never waits for a subscriber. A message with blocks is
// paced as Publish is (PubSub.pace); one without, which boxo's client would
// not have published, is not, nor is one that was refused (after Shutdown,
// for bad input, or when ctx ended before it took effect). A message whose
// store failed ends the PubSub calls that wait for its blocks, as in Publish:
// in boxo's client their sessions have let go of those keys already. A store
// error that wraps a ctx error (a datastore's own timeout) counts as a failed
// store while ctx is live; a message refused because ctx ended ends nothing,
// as the caller may publish it again.
func PublishMessage(ctx context.Context, ps *PubSub, msg notifier.ResponseMessage) error {
	listed := ps.log.begun.Load()
	err := ps.publish(ctx, msg)
	if err != nil && !refused(ctx, err) {
		ps.failWaiting(msg.Blocks, listed) // the store failed: its blocks will not come
	}
	if len(msg.Blocks) > 0 && !refused(ctx, err) {
		ps.pace(msg.From != "")
	}
	return err
}

// refused reports whether Notifier.Publish, called with ctx, returned err
// without publishing: after Close, for bad input, or because ctx ended (a
// store error that wraps a ctx error, ctx being live, is a failed store). A
// failed store is not refused: the message took effect, delivering nothing.
func refused(ctx context.Context, err error) bool {
	return errors.Is(err, notifier.ErrClosed) || errors.Is(err, notifier.ErrNilBlock) ||
		errors.Is(err, notifier.ErrInvalidCid) || endedBy(ctx, err)
}

func makeConfig(opts []Option) config {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// report hands err, the error of a call under ctx, to the error function,
// unless it only says that the Notifier is closed or that ctx has ended. A
// store's own timeout wraps context.DeadlineExceeded too, but while ctx is
// live it is a failed store, and is reported (a first version dropped it).
func report(ctx context.Context, onErr func(error), err error) {
	if err == nil || onErr == nil || errors.Is(err, notifier.ErrClosed) || endedBy(ctx, err) {
		return
	}
	onErr(err)
}

// endedBy reports whether err says only that ctx has ended.
func endedBy(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx)))
}

// mustBeUsable panics, naming method, on a nil block or a block with an
// undefined CID: boxo's methods panic on a nil block too, and no peer can
// send a block without a CID, so either is a programming error of the caller.
func mustBeUsable(method string, blks []blocks.Block) {
	for i, b := range blks {
		if b == nil {
			panic(fmt.Sprintf("bitswapcompat: %s: blks[%d] is a nil block", method, i))
		}
		if !b.Cid().Defined() {
			panic(fmt.Sprintf("bitswapcompat: %s: blks[%d] has an undefined CID", method, i))
		}
	}
}
