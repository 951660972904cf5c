// Package faultbs wraps a blockstore so that tests can make its Has, Get and
// PutMany fail, stall, or fail after writing, and switch those faults on and
// off while the store is in use; or (SetRandom) make a share of the calls,
// drawn by chance from a seed, fail or run slow.
//
// It is a test helper: a Store is safe for concurrent use, and every fault it
// injects is an error that wraps ErrInjected or the context's error, so a
// test can check that the error reached its caller wrapped.
package faultbs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// ErrInjected is wrapped by every error that a Fail or FailAfter fault returns.
var ErrInjected = errors.New("faultbs: injected fault")

// Blockstore is the part of a blockstore that Store wraps: the methods that
// the notifier calls.
type Blockstore interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	PutMany(ctx context.Context, blks []blocks.Block) error
}

// Method names one of the wrapped methods.
type Method int

const (
	Has Method = iota
	Get
	PutMany
	numMethods
)

func (m Method) String() string {
	switch m {
	case Has:
		return "Has"
	case Get:
		return "Get"
	case PutMany:
		return "PutMany"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// Mode is what a method does when called.
type Mode int

const (
	// Pass calls the wrapped store.
	Pass Mode = iota
	// Fail returns an error wrapping ErrInjected without calling the wrapped
	// store: nothing is read or written.
	Fail
	// FailAfter calls the wrapped store and then returns an error wrapping
	// ErrInjected: a PutMany has written its blocks but reports that it has
	// not, the worst case of a torn write.
	FailAfter
	// Stall blocks the call until Release, then passes; if the call's context
	// is done first, it returns the context's error, wrapped, having done
	// nothing.
	Stall
	// StallIgnoreCtx blocks the call until Release, whatever its context, then
	// passes.
	StallIgnoreCtx
)

// Store is a Blockstore whose methods misbehave on demand. Create it with New.
type Store struct {
	inner Blockstore
	calls [numMethods]atomic.Int64

	mu      sync.Mutex // guards modes, gates, failing, random and tries
	modes   [numMethods]Mode
	gates   [numMethods]*gate // set while the mode is Stall or StallIgnoreCtx
	failing [numMethods]map[cid.Cid]bool
	random  Random         // see SetRandom
	tries   map[try]uint32 // calls drawn so far, per method and key

	failed, slowed [numMethods]atomic.Int64 // faults that random injected
}

// gate holds stalled calls until release is closed.
type gate struct {
	release chan struct{}
	entered chan struct{} // one value per call that has started to stall
}

// New returns a Store that passes every call to inner until told otherwise.
func New(inner Blockstore) *Store { return &Store{inner: inner} }

// Set makes m behave as mode from its next call on. Setting a mode other
// than a stall releases the calls stalled in m, which then run in that mode:
// Set(PutMany, Fail) makes the stalled PutMany calls fail. It returns the
// channel on which a stalled call reports that it has started to stall (one
// value per call) when mode is a stall, else nil.
func (s *Store) Set(m Method, mode Mode) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modes[m] = mode
	if mode != Stall && mode != StallIgnoreCtx {
		s.releaseLocked(m)
		return nil
	}
	if s.gates[m] == nil {
		s.gates[m] = &gate{release: make(chan struct{}), entered: make(chan struct{}, 1024)}
	}
	return s.gates[m].entered
}

// FailKeys makes the calls of m that involve any of keys fail as in Fail,
// whatever m's mode: a Get or Has of one of them, a PutMany of a batch that
// holds one of them. FailKeys(m) with no keys stops that.
func (s *Store) FailKeys(m Method, keys ...cid.Cid) {
	set := make(map[cid.Cid]bool, len(keys))
	for _, k := range keys {
		set[k] = true
	}
	s.mu.Lock()
	s.failing[m] = set
	s.mu.Unlock()
}

// Release lets every call stalled in m continue and sets m back to Pass.
func (s *Store) Release(m Method) { s.Set(m, Pass) }

func (s *Store) releaseLocked(m Method) {
	if g := s.gates[m]; g != nil {
		close(g.release)
		s.gates[m] = nil
	}
}

// Calls returns how many times m has been called.
func (s *Store) Calls(m Method) int64 { return s.calls[m].Load() }

// Has reports whether the wrapped store has c, or misbehaves as set.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	mode, err := s.enter(ctx, Has, c.String(), c)
	if err != nil {
		return false, err
	}
	ok, err := s.inner.Has(ctx, c)
	if err == nil && mode == FailAfter {
		err = injected(Has, c.String())
	}
	return ok, err
}

// Get returns c's block from the wrapped store, or misbehaves as set.
func (s *Store) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	mode, err := s.enter(ctx, Get, c.String(), c)
	if err != nil {
		return nil, err
	}
	b, err := s.inner.Get(ctx, c)
	if err == nil && mode == FailAfter {
		return nil, injected(Get, c.String())
	}
	return b, err
}

// PutMany stores blks in the wrapped store, or misbehaves as set.
func (s *Store) PutMany(ctx context.Context, blks []blocks.Block) error {
	what := fmt.Sprintf("%d blocks", len(blks))
	keys := make([]cid.Cid, len(blks))
	for i, b := range blks {
		keys[i] = b.Cid()
	}
	mode, err := s.enter(ctx, PutMany, what, keys...)
	if err != nil {
		return err
	}
	if err := s.inner.PutMany(ctx, blks); err != nil {
		return err
	}
	if mode == FailAfter {
		return injected(PutMany, what)
	}
	return nil
}

// enter counts the call and applies m's mode up to the wrapped call: it
// returns the mode the call runs in, or the error that ends the call before it
// reaches the wrapped store. A stalled call, once released, runs in the mode
// set at its release.
func (s *Store) enter(ctx context.Context, m Method, what string, keys ...cid.Cid) (Mode, error) {
	s.calls[m].Add(1)
	for {
		s.mu.Lock()
		mode, g := s.modes[m], s.gates[m]
		for _, k := range keys {
			if s.failing[m][k] {
				mode = Fail
			}
		}
		d := drawPass
		if mode == Pass {
			d = s.drawLocked(m, keys)
		}
		delay := s.random.Delay
		s.mu.Unlock()
		switch d {
		case drawFail:
			s.failed[m].Add(1)
			return mode, fmt.Errorf("faultbs: %s %s: drawn: %w", m, what, ErrInjected)
		case drawSlow:
			s.slowed[m].Add(1)
			if err := slow(ctx, delay); err != nil {
				return mode, fmt.Errorf("faultbs: %s %s: slowed: %w", m, what, err)
			}
		}
		switch mode {
		case Fail:
			return mode, injected(m, what)
		case Stall, StallIgnoreCtx:
			if err := g.wait(ctx, mode); err != nil {
				return mode, fmt.Errorf("faultbs: %s %s: stalled: %w", m, what, err)
			}
			continue
		}
		return mode, nil
	}
}

// wait stalls until g is released or, for Stall, ctx is done.
func (g *gate) wait(ctx context.Context, mode Mode) error {
	select {
	case g.entered <- struct{}{}:
	default:
		panic("faultbs: more than 1024 stalled calls that nobody received from the entered channel")
	}
	done := ctx.Done()
	if mode == StallIgnoreCtx {
		done = nil
	}
	select {
	case <-g.release:
		return nil
	case <-done:
		return ctx.Err()
	}
}

func injected(m Method, what string) error {
	return fmt.Errorf("faultbs: %s %s: %w", m, what, ErrInjected)
}
