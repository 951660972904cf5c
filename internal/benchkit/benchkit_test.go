package benchkit

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

func TestW2_Shape(t *testing.T) {
	p := W2()
	if len(p.Msgs) != W2Subs*W2KeysPer/W2Blocks {
		t.Fatalf("%d messages", len(p.Msgs))
	}
	delivered := make(map[cid.Cid]int) // key -> message that carries its block
	for m, msg := range p.Msgs {
		if len(msg.Blocks) != W2Blocks {
			t.Fatalf("message %d has %d blocks", m, len(msg.Blocks))
		}
		for _, b := range msg.Blocks {
			if _, dup := delivered[b.Cid()]; dup {
				t.Fatalf("block %s published twice", b.Cid())
			}
			delivered[b.Cid()] = m
		}
	}
	if len(delivered) != len(p.Keys) {
		t.Fatalf("%d of %d keys published", len(delivered), len(p.Keys))
	}
	full := 0
	for m, msg := range p.Msgs {
		if len(msg.Haves) == W2Haves && len(msg.DontHaves) == W2DontHaves {
			full++
		}
		for _, k := range append(append([]cid.Cid(nil), msg.Haves...), msg.DontHaves...) {
			if delivered[k] <= m {
				t.Fatalf("message %d announces %s, whose block came in message %d", m, k, delivered[k])
			}
		}
	}
	if full < len(p.Msgs)-4 {
		t.Fatalf("only %d full messages", full)
	}
	t.Logf("W2: a message reaches %.1f of %d subscriptions on average", p.InterestedPerMsg(), W2Subs)
}

// smallPlan is W2 in miniature: subs subscriptions of 4 keys each, two
// blocks and one HAVE of the next message's first key per message.
func smallPlan(subs int) *Plan {
	blks := Blocks("small", subs*4)
	p := &Plan{Blocks: blks, Keys: Keys(blks), PerSub: 4}
	for i := range subs {
		p.SubKeys = append(p.SubKeys, p.Keys[i*4:(i+1)*4])
	}
	for m := 0; m < len(blks)/2; m++ {
		msg := notifier.ResponseMessage{From: Peer(m), Blocks: []blocks.Block{blks[2*m], blks[2*m+1]}}
		if 2*m+2 < len(blks) {
			msg.Haves = []cid.Cid{p.Keys[2*m+2]}
		}
		p.Msgs = append(p.Msgs, msg)
	}
	return p
}

// Every implementation consumes whole rounds, on every kind of store.
func TestImpls_RoundsComplete(t *testing.T) {
	p := smallPlan(8)
	floorWork := Maker{ImplFloor + "-work8", func(c Config) (Impl, error) { return NewFloorWork(c, 8) }}
	floorMsg := Maker{ImplFloorMsg, NewFloorMsg}
	for _, kind := range []string{StoreNone, StoreMem, StoreMemConc, StoreSlowPut, StoreFlatFS} {
		for _, mk := range append(Makers[:len(Makers):len(Makers)], floorWork, floorMsg) {
			t.Run(kind+"/"+mk.Name, func(t *testing.T) {
				testRounds(t, kind, mk, p)
			})
		}
	}
	// W1's messages of one block take the floor-msg's path of its own.
	for _, mk := range []Maker{Makers[1], floorMsg} {
		t.Run("W1/"+mk.Name, func(t *testing.T) {
			testRounds(t, StoreMem, mk, W1(3))
		})
	}
}

// testRounds runs three rounds of plan p on mk over a store of kind and
// checks that each delivers every block to every session.
func testRounds(t *testing.T, kind string, mk Maker, p *Plan) {
	t.Helper()
	ctx := context.Background()
	st, err := OpenStore(kind, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}()
	impl, err := mk.New(Config{Store: st, Subs: len(p.SubKeys), PerSub: p.PerSub, Buffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer impl.Close()
	for round := 1; round <= 3; round++ {
		if err := p.Reset(ctx, st, impl); err != nil {
			t.Fatal(err)
		}
		Settle(time.Second)
		impl.Arm()
		for i := range p.Msgs {
			if err := impl.Publish(ctx, &p.Msgs[i]); err != nil {
				t.Fatal(err)
			}
		}
		impl.Wait()
		if got, want := impl.Delivered(), int64(round*len(p.SubKeys)*p.PerSub); got != want {
			t.Fatalf("round %d: delivered %d, want %d", round, got, want)
		}
	}
}

// A floor with negative work is refused; no work is the floor's.
func TestNewFloorWork_RefusesNegativeWork(t *testing.T) {
	st, err := OpenStore(StoreNone, "")
	if err != nil {
		t.Fatal(err)
	}
	if impl, err := NewFloorWork(Config{Store: st, Subs: 1, PerSub: 1}, -1); err == nil {
		impl.Close()
		t.Fatal("NewFloorWork(-1) made a floor")
	}
	if got := Work(7, 0); got != 7 {
		t.Fatalf("Work(7, 0) = %d, want its seed", got)
	}
}

// Churn keeps its rate on the clock, and catches up after it was held up: in
// a synctest bubble, whose clock moves only when every goroutine waits,
// 100.1 ms at 5,000 a second are exactly 500 operations (the 500th is due at
// 100 ms), also when the first one takes 10 ms.
func TestChurn_KeepsTheRate(t *testing.T) {
	st, err := OpenStore(StoreMem, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, mk := range []Maker{Makers[0], Makers[1]} {
		for _, hold := range []time.Duration{0, 10 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s/hold=%v", mk.Name, hold), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					impl, err := mk.New(Config{Store: st})
					if err != nil {
						t.Fatal(err)
					}
					defer impl.Close()
					c := &heldChurner{Churner: impl.(Churner), hold: hold}
					stop, err := Churn(context.Background(), c, FakeKeys(1, 16), 5000)
					if err != nil {
						t.Fatal(err)
					}
					const span = 100*time.Millisecond + 100*time.Microsecond
					time.Sleep(span)
					if ops, took := stop(); ops != 500 || took != span {
						t.Fatalf("%d ops in %v, want 500 in %v", ops, took, span)
					}
				})
			})
		}
	}
}

// heldChurner is a Churner whose first operation takes hold longer.
type heldChurner struct {
	Churner
	hold time.Duration
}

func (c *heldChurner) Churn(ctx context.Context, k cid.Cid, on bool) error {
	time.Sleep(c.hold)
	c.hold = 0
	return c.Churner.Churn(ctx, k, on)
}

func TestBuild_W5TearsDown(t *testing.T) {
	ctx := context.Background()
	st, err := OpenStore(StoreMem, "")
	if err != nil {
		t.Fatal(err)
	}
	keys := [][]cid.Cid{FakeKeys(7, 10), FakeKeys(8, 10)}
	for _, build := range []func(context.Context, *Store, [][]cid.Cid) (*Built, error){BuildNotifier, BuildLegacy} {
		b, err := build(ctx, st, keys)
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
}

func TestW6_Shape(t *testing.T) {
	p := W6()
	if len(p.Msgs) != W6Pubs*W6MsgsPerPub {
		t.Fatalf("%d messages", len(p.Msgs))
	}
	owner := make(map[cid.Cid]int)     // key -> publisher that names it
	delivered := make(map[cid.Cid]int) // key -> message that carries its block
	for i, msg := range p.Msgs {
		pub := i % W6Pubs
		if msg.From != Peer(pub) {
			t.Fatalf("message %d from %s, want %s", i, msg.From, Peer(pub))
		}
		if len(msg.Blocks) != W2Blocks {
			t.Fatalf("message %d has %d blocks", i, len(msg.Blocks))
		}
		keys := append(append(Keys(msg.Blocks), msg.Haves...), msg.DontHaves...)
		for _, k := range keys {
			if o, ok := owner[k]; ok && o != pub {
				t.Fatalf("publishers %d and %d both name %s", o, pub, k)
			}
			owner[k] = pub
		}
		for _, b := range msg.Blocks {
			if _, dup := delivered[b.Cid()]; dup {
				t.Fatalf("block %s published twice", b.Cid())
			}
			delivered[b.Cid()] = i
		}
	}
	for i, msg := range p.Msgs {
		for _, k := range append(append([]cid.Cid(nil), msg.Haves...), msg.DontHaves...) {
			if delivered[k] <= i {
				t.Fatalf("message %d announces %s, whose block came in message %d", i, k, delivered[k])
			}
		}
	}
	if len(delivered) != len(p.Keys) {
		t.Fatalf("%d of %d keys published", len(delivered), len(p.Keys))
	}
	subs := 0
	for _, ks := range p.SubKeys {
		if len(ks) != p.PerSub {
			t.Fatalf("a subscription wants %d keys, want %d", len(ks), p.PerSub)
		}
		subs++
	}
	t.Logf("W6: %d subscriptions; a message reaches %.1f on average", subs, p.InterestedPerMsg())
}
