package benchkit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	datastore "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// go-datastore's own test suite (go-datastore/test) would add a module to
// go.mod; this covers what boxo's blockstore calls.
func TestShardedDatastore_Basics(t *testing.T) {
	ctx := context.Background()
	d := NewShardedDatastore()
	b, err := d.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := b.Put(ctx, datastore.NewKey(fmt.Sprint("/a/", i)), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := d.Has(ctx, datastore.NewKey("/a/7")); ok {
		t.Fatal("a batch's put is visible before Commit")
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	k := datastore.NewKey("/a/42")
	if v, err := d.Get(ctx, k); err != nil || string(v) != "42" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if n, err := d.GetSize(ctx, k); err != nil || n != 2 {
		t.Fatalf("GetSize = %d, %v", n, err)
	}
	if err := d.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, k); err != datastore.ErrNotFound {
		t.Fatalf("Get after Delete: %v", err)
	}
	if n, err := d.GetSize(ctx, k); err != datastore.ErrNotFound || n != -1 {
		t.Fatalf("GetSize after Delete = %d, %v", n, err)
	}
	if ok, err := d.Has(ctx, k); err != nil || ok {
		t.Fatalf("Has after Delete = %v, %v", ok, err)
	}
	if err := d.Put(ctx, datastore.NewKey("/b/1"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := d.Query(ctx, dsq.Query{Prefix: "/a", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	es, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 99 {
		t.Fatalf("Query /a: %d entries, want 99", len(es))
	}
}

// Concurrent writers and readers of overlapping keys: run with -race. A Get
// may find its key gone, deleted by another writer, and nothing else.
func TestShardedDatastore_Concurrent(t *testing.T) {
	ctx := context.Background()
	d := NewShardedDatastore()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := datastore.NewKey(fmt.Sprint(i % 50))
				if err := d.Put(ctx, k, []byte{byte(w)}); err != nil {
					t.Error(err)
				}
				// Another writer may have deleted k since the Put.
				if _, err := d.Get(ctx, k); err != nil && !errors.Is(err, datastore.ErrNotFound) {
					t.Error(err)
				}
				if i%3 == 0 {
					if err := d.Delete(ctx, k); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
}
