package legacy

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestPubSub_DeliversEachKeyOnceThenCloses(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps := NewPubSub()
	defer ps.Shutdown()
	b1, b2 := mkBlock("one"), mkBlock("two")

	ch := ps.Subscribe(context.Background(), b1.Cid(), b2.Cid())
	ps.Publish("", b1, b1, b2)

	got := drain(t, ch)
	assert.Equal(t, []blocks.Block{b1, b2}, got)
}

func TestPubSub_BlockPublishedBeforeSubscribeIsLost(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps := NewPubSub()
	defer ps.Shutdown()
	b1, b2 := mkBlock("early"), mkBlock("late")

	ps.Publish("", b1)
	ch := ps.Subscribe(context.Background(), b1.Cid(), b2.Cid())
	ps.Publish("", b2)

	assert.Equal(t, b2, recv(t, ch))
	assert.Empty(t, ch, "a block published before Subscribe must not arrive")
}

func TestPubSub_ContextDoneClosesChannel(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps := NewPubSub()
	defer ps.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())

	ch := ps.Subscribe(ctx, mkBlock("never").Cid())
	cancel()

	assert.Empty(t, drain(t, ch))
}

func TestPubSub_ShutdownClosesEverything(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps := NewPubSub()
	b := mkBlock("x")
	ch := ps.Subscribe(context.Background(), b.Cid())

	ps.Shutdown()
	ps.Shutdown()
	ps.Publish("", b)

	assert.Empty(t, drain(t, ch))
	after := ps.Subscribe(context.Background(), b.Cid())
	_, ok := <-after
	require.False(t, ok, "Subscribe after Shutdown must return a closed channel")
}

func TestPubSub_NoKeysGivesClosedChannel(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps := NewPubSub()
	defer ps.Shutdown()

	_, ok := <-ps.Subscribe(context.Background())
	assert.False(t, ok)
}
