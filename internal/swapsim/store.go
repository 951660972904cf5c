package swapsim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	flatfs "github.com/ipfs/go-ds-flatfs"
	format "github.com/ipfs/go-ipld-format"

	notifier "github.com/bitswapsync/notifier"
)

// openStore returns the blockstore of a run and a function that releases it:
// the in-memory store, or a flatfs store in a fresh directory under
// cfg.Dir that the release function removes.
func openStore(cfg *Config) (notifier.Blockstore, func() error, error) {
	if cfg.Store == "mem" {
		bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		return bs, func() error { return nil }, nil
	}
	dir, err := os.MkdirTemp(cfg.Dir, "swapsim-"+cfg.Impl+"-")
	if err != nil {
		return nil, nil, fmt.Errorf("swapsim: flatfs directory: %w", err)
	}
	ds, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), false)
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("swapsim: flatfs: %w", err), os.RemoveAll(dir))
	}
	release := func() error { return errors.Join(ds.Close(), os.RemoveAll(dir)) }
	// flatfs keys are one path component, as IPFS mounts it.
	return blockstore.NewBlockstore(ds, blockstore.NoPrefix()), release, nil
}

// recordingStore tells the checker about every PutMany of the client, and
// about every Get and Has that failed.
type recordingStore struct {
	notifier.Blockstore
	chk *checker
}

// PutMany records STORE around the inner PutMany: storing before it (the
// client has decided to store), stored once it returned, or failed.
func (r recordingStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	r.chk.storing(blks)
	if err := r.Blockstore.PutMany(ctx, blks); err != nil {
		r.chk.storeFailed(blks)
		return err
	}
	r.chk.stored(blks)
	return nil
}

func (r recordingStore) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	b, err := r.Blockstore.Get(ctx, k)
	failed := err != nil && !isNotFound(err)
	if failed {
		r.chk.misread(k)
	}
	noteCheck(ctx, k, failed)
	return b, err
}

func (r recordingStore) Has(ctx context.Context, k cid.Cid) (bool, error) {
	ok, err := r.Blockstore.Has(ctx, k)
	if err != nil {
		r.chk.misread(k)
	}
	noteCheck(ctx, k, err != nil)
	return ok, err
}

// wantCheck is what the blockstore calls made with one Want's context found:
// for each key, whether the last Get or Has of it failed; and the keys whose
// block the Want itself returned (a Fetch hit), as the Impl reports them
// (noteFound). The driver gives each Want its own context (withWantCheck),
// so these are the Want's own checks, whatever other operations read
// meanwhile.
type wantCheck struct {
	mu     sync.Mutex       // guards failed and found
	failed map[cid.Cid]bool // k's last check by the Want failed
	found  []cid.Cid
}

type wantCheckKey struct{}

// withWantCheck returns a context for one Want, which records the Want's
// blockstore checks in the returned wantCheck.
// cutShortKey is the context key of a Want's cut-short function (see
// worker.cutShort).
type cutShortKey struct{}

// withCutShort returns ctx with f, which an Impl whose client can end a
// Want's call early (legacy's GetBlocks over compat's PubSub) calls with the
// keys still missing.
func withCutShort(ctx context.Context, f func(keys []cid.Cid)) context.Context {
	return context.WithValue(ctx, cutShortKey{}, f)
}

// cutShortFunc returns the function of withCutShort in ctx, or nil.
func cutShortFunc(ctx context.Context) func(keys []cid.Cid) {
	f, _ := ctx.Value(cutShortKey{}).(func([]cid.Cid))
	return f
}

func withWantCheck(ctx context.Context) (context.Context, *wantCheck) {
	c := &wantCheck{failed: make(map[cid.Cid]bool)}
	return context.WithValue(ctx, wantCheckKey{}, c), c
}

// noteCheck records a check of k in the wantCheck of ctx, if it has one.
func noteCheck(ctx context.Context, k cid.Cid, failed bool) {
	if c, ok := ctx.Value(wantCheckKey{}).(*wantCheck); ok {
		c.mu.Lock()
		c.failed[k] = failed
		c.mu.Unlock()
	}
}

// noteFound records, in the wantCheck of ctx if it has one, that the Want
// returned k's block, found in the blockstore.
func noteFound(ctx context.Context, k cid.Cid) {
	if c, ok := ctx.Value(wantCheckKey{}).(*wantCheck); ok {
		c.mu.Lock()
		c.found = append(c.found, k)
		c.mu.Unlock()
	}
}

// foundKeys returns the keys of noteFound.
func (c *wantCheck) foundKeys() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.found
}

// lastFailed reports whether the Want's last check of k failed.
func (c *wantCheck) lastFailed(k cid.Cid) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed[k]
}

func isNotFound(err error) bool {
	return format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound)
}
