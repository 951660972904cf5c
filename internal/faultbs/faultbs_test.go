package faultbs

import (
	"context"
	"errors"
	"testing"

	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	format "github.com/ipfs/go-ipld-format"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore() (*Store, blockstore.Blockstore) {
	inner := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	return New(inner), inner
}

func TestStore_Pass(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore()
	b := blocks.NewBlock([]byte("a"))
	if _, err := s.Get(ctx, b.Cid()); !format.IsNotFound(err) {
		t.Fatalf("Get of a missing block: %v, want not found", err)
	}
	if err := s.PutMany(ctx, []blocks.Block{b}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Has(ctx, b.Cid()); !ok || err != nil {
		t.Fatalf("Has = %v, %v after PutMany", ok, err)
	}
	if got, err := s.Get(ctx, b.Cid()); err != nil || got.Cid() != b.Cid() {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if s.Calls(Has) != 1 || s.Calls(Get) != 2 || s.Calls(PutMany) != 1 {
		t.Fatalf("calls Has %d Get %d PutMany %d", s.Calls(Has), s.Calls(Get), s.Calls(PutMany))
	}
}

func TestStore_Fail(t *testing.T) {
	ctx := context.Background()
	s, inner := newStore()
	b := blocks.NewBlock([]byte("a"))
	for m := Has; m < numMethods; m++ {
		s.Set(m, Fail)
	}
	if err := s.PutMany(ctx, []blocks.Block{b}); !errors.Is(err, ErrInjected) {
		t.Fatalf("PutMany: %v, want ErrInjected", err)
	}
	if ok, _ := inner.Has(ctx, b.Cid()); ok {
		t.Fatal("a failed PutMany wrote")
	}
	if _, err := s.Has(ctx, b.Cid()); !errors.Is(err, ErrInjected) {
		t.Fatalf("Has: %v, want ErrInjected", err)
	}
	if _, err := s.Get(ctx, b.Cid()); !errors.Is(err, ErrInjected) {
		t.Fatalf("Get: %v, want ErrInjected", err)
	}
	s.Set(PutMany, Pass)
	if err := s.PutMany(ctx, []blocks.Block{b}); err != nil {
		t.Fatalf("PutMany after healing: %v", err)
	}
}

func TestStore_FailAfter(t *testing.T) {
	ctx := context.Background()
	s, inner := newStore()
	b := blocks.NewBlock([]byte("a"))
	s.Set(PutMany, FailAfter)
	if err := s.PutMany(ctx, []blocks.Block{b}); !errors.Is(err, ErrInjected) {
		t.Fatalf("PutMany: %v, want ErrInjected", err)
	}
	if ok, _ := inner.Has(ctx, b.Cid()); !ok {
		t.Fatal("a FailAfter PutMany did not write")
	}
	s.Set(Get, FailAfter)
	if _, err := s.Get(ctx, b.Cid()); !errors.Is(err, ErrInjected) {
		t.Fatalf("Get: %v, want ErrInjected", err)
	}
}

func TestStore_StallRelease(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore()
	b := blocks.NewBlock([]byte("a"))
	entered := s.Set(PutMany, Stall)
	done := make(chan error)
	go func() { done <- s.PutMany(ctx, []blocks.Block{b}) }()
	<-entered
	select {
	case err := <-done:
		t.Fatalf("stalled PutMany returned %v before Release", err)
	default:
	}
	s.Release(PutMany)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Has(ctx, b.Cid()); !ok {
		t.Fatal("released PutMany did not write")
	}
}

func TestStore_StallHonoursContext(t *testing.T) {
	s, inner := newStore()
	b := blocks.NewBlock([]byte("a"))
	entered := s.Set(PutMany, Stall)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.PutMany(ctx, []blocks.Block{b}) }()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("PutMany: %v, want context.Canceled", err)
	}
	if ok, _ := inner.Has(context.Background(), b.Cid()); ok {
		t.Fatal("a cancelled PutMany wrote")
	}
	s.Release(PutMany)
}

func TestStore_StallIgnoreCtx(t *testing.T) {
	s, _ := newStore()
	b := blocks.NewBlock([]byte("a"))
	entered := s.Set(Get, StallIgnoreCtx)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error)
	go func() {
		_, err := s.Get(ctx, b.Cid())
		done <- err
	}()
	<-entered
	s.Release(Get)
	if err := <-done; !format.IsNotFound(err) {
		t.Fatalf("Get: %v, want not found from the wrapped store", err)
	}
}

func TestStore_StalledCallRunsInModeSetAtRelease(t *testing.T) {
	s, inner := newStore()
	b := blocks.NewBlock([]byte("a"))
	entered := s.Set(PutMany, Stall)
	done := make(chan error)
	go func() { done <- s.PutMany(context.Background(), []blocks.Block{b}) }()
	<-entered
	s.Set(PutMany, Fail)
	if err := <-done; !errors.Is(err, ErrInjected) {
		t.Fatalf("PutMany: %v, want ErrInjected", err)
	}
	if ok, _ := inner.Has(context.Background(), b.Cid()); ok {
		t.Fatal("a PutMany released into Fail wrote")
	}
}

func TestStore_FailKeys(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore()
	a, b := blocks.NewBlock([]byte("a")), blocks.NewBlock([]byte("b"))
	s.FailKeys(PutMany, b.Cid())
	if err := s.PutMany(ctx, []blocks.Block{a, b}); !errors.Is(err, ErrInjected) {
		t.Fatalf("PutMany of a batch with a failing key: %v, want ErrInjected", err)
	}
	if err := s.PutMany(ctx, []blocks.Block{a}); err != nil {
		t.Fatalf("PutMany of another key: %v", err)
	}
	s.FailKeys(Get, a.Cid())
	if _, err := s.Get(ctx, a.Cid()); !errors.Is(err, ErrInjected) {
		t.Fatalf("Get of a failing key: %v, want ErrInjected", err)
	}
	s.FailKeys(Get)
	if _, err := s.Get(ctx, a.Cid()); err != nil {
		t.Fatalf("Get after FailKeys(Get): %v", err)
	}
}
