package benchkit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// floorBuffer is the capacity of a floor session's channel unless
// Config.Buffer is larger: enough that a W1 or W2 round never blocks the
// publisher, whose cost would then no longer be the floor's.
const floorBuffer = 1024

// delivery is what the floor sends per (session, key): the key, and the
// block for a block.
type delivery struct {
	key cid.Cid
	blk blocks.Block
}

// floorImpl is the least any implementation must do: PutMany the blocks
// (as the others store them), one map lookup per key of the message and one
// buffered channel send per (session, key); a consumer goroutine per session
// counts the blocks. It keeps no state per want: wants never end, the map is
// built by the first Want of each session and only read afterwards, so
// Publish may run in parallel but Churn is not offered.
type floorImpl struct {
	work  int // rounds of Work per delivery, before the message's sends (NewFloorWork)
	sink  atomic.Uint64
	st    *Store
	idx   map[cid.Cid][]chan delivery
	chans []chan delivery
	built []bool // session i's keys are in idx
	t     *tally
	wg    sync.WaitGroup // consumers
}

// NewFloor returns the floor.
func NewFloor(cfg Config) (Impl, error) { return newFloor(cfg, 0) }

// NewFloorWork returns the floor doing rounds of Work per delivery, all of
// a message's before its first send, as the Notifier routes a message
// before it hands it out. It is a diagnostic: how the floor's time per
// delivery grows with a little work of its own besides the channel sends
// (BENCHMARKS.md, twelfth series).
func NewFloorWork(cfg Config, rounds int) (Impl, error) {
	if rounds < 0 {
		return nil, fmt.Errorf("benchkit: floor with %d rounds of work", rounds)
	}
	return newFloor(cfg, rounds)
}

func newFloor(cfg Config, work int) (Impl, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	x := &floorImpl{
		work:  work,
		st:    cfg.Store,
		idx:   make(map[cid.Cid][]chan delivery),
		chans: make([]chan delivery, cfg.Subs),
		built: make([]bool, cfg.Subs),
		t:     newTally(cfg.Subs, cfg.PerSub),
	}
	for i := range x.chans {
		x.chans[i] = make(chan delivery, max(cfg.Buffer, floorBuffer))
		x.wg.Add(1)
		go x.consume(i, x.chans[i])
	}
	return x, nil
}

func (x *floorImpl) consume(i int, ch <-chan delivery) {
	defer x.wg.Done()
	for d := range ch {
		if d.blk != nil {
			x.t.add(i, 1)
		}
	}
}

// Want indexes session i under keys the first time; the floor's wants never
// end, so later calls, which the workloads make with the same keys, are no-ops.
func (x *floorImpl) Want(_ context.Context, i int, keys []cid.Cid) error {
	if x.built[i] {
		return nil
	}
	x.built[i] = true
	for _, k := range keys {
		x.idx[k] = append(x.idx[k], x.chans[i])
	}
	return nil
}

func (x *floorImpl) Publish(ctx context.Context, msg *notifier.ResponseMessage) error {
	if err := x.st.PutMany(ctx, msg.Blocks); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	for _, b := range msg.Blocks {
		k := b.Cid()
		if x.work > 0 {
			x.sink.Add(Work(uint64(len(x.idx[k])), x.work*len(x.idx[k])))
		}
		for _, ch := range x.idx[k] {
			ch <- delivery{key: k, blk: b}
		}
	}
	for _, keys := range [2][]cid.Cid{msg.Haves, msg.DontHaves} {
		for _, k := range keys {
			for _, ch := range x.idx[k] {
				ch <- delivery{key: k}
			}
		}
	}
	return nil
}

func (x *floorImpl) Arm()             { x.t.arm() }
func (x *floorImpl) Wait()            { x.t.wait() }
func (x *floorImpl) Delivered() int64 { return x.t.sum(0, len(x.t.cs)) }

func (x *floorImpl) Close() {
	for _, ch := range x.chans {
		close(ch)
	}
	x.wg.Wait()
}

// Work is a fixed amount of CPU work, rounds dependent multiply-adds from
// seed, whose result it returns so that the compiler keeps it.
// BenchmarkFloorWork measures a round.
func Work(seed uint64, rounds int) uint64 {
	for range rounds {
		seed = seed*6364136223846793005 + 1442695040888963407
	}
	return seed
}
