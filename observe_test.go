package notifier

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// traced returns a context with a span that records into an in-memory
// exporter, and a function that ends the span and returns its events.
func traced(t *testing.T, sampler sdktrace.Sampler) (context.Context, func() []sdktrace.Event) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	return ctx, func() []sdktrace.Event {
		span.End()
		spans := exp.GetSpans()
		if len(spans) == 0 {
			return nil
		}
		require.Len(t, spans, 1)
		return spans[0].Events
	}
}

func attrs(e sdktrace.Event) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(e.Attributes))
	for _, kv := range e.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestTrace_PublishAndSubscribeAddEventsToARecordingSpan(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	ctx, events := traced(t, sdktrace.AlwaysSample())
	b := mkBlocks("trace", 3)
	s1, s2 := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s1.Subscribe(ctx, b[0].Cid(), b[1].Cid()))
	require.NoError(t, s2.Subscribe(context.Background(), b[0].Cid())) // no span: no event
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b}))
	recv(t, s1)
	recv(t, s2)

	ev := events()
	require.Len(t, ev, 2)
	require.Equal(t, "notifier.Subscribe", ev[0].Name)
	sub := attrs(ev[0])
	require.EqualValues(t, 0, sub["delivered"].AsInt64())
	require.Positive(t, sub["duration_ns"].AsInt64())
	require.Positive(t, sub["blockstore_ns"].AsInt64(), "two Gets")

	require.Equal(t, "notifier.Publish", ev[1].Name)
	pub := attrs(ev[1])
	require.EqualValues(t, 2, pub["stored"].AsInt64(), "b0 and b1; b2 is unsolicited")
	require.EqualValues(t, 1, pub["unsolicited"].AsInt64())
	require.EqualValues(t, 3, pub["delivered"].AsInt64(), "b0 to both, b1 to s1")
	require.Positive(t, pub["blockstore_ns"].AsInt64())
	require.GreaterOrEqual(t, pub["duration_ns"].AsInt64(), pub["blockstore_ns"].AsInt64())
	require.NotContains(t, pub, attribute.Key("error"))
}

func TestTrace_EventsOnErrorsAndSlowConsumers(t *testing.T) {
	bs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, bs, WithBufferSize(1), WithMaxPending(1))
	ctx, events := traced(t, sdktrace.AlwaysSample())
	k := keysOf(mkBlocks("slow", 1))[0]
	s := mustSub(t, n, 7)
	require.NoError(t, s.Subscribe(context.Background(), k))
	for i := 0; s.Err() == nil; i++ {
		require.Less(t, i, 10)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k}}))
	}
	bs.onPutMany = func([]blocks.Block) error { return errBoom }
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: mkBlocks("fail", 1)}), errBoom)

	ev := events()
	var slow, failed int
	for _, e := range ev {
		switch e.Name {
		case "notifier.SlowConsumer":
			slow++
			a := attrs(e)
			require.EqualValues(t, 7, a["subscription"].AsInt64())
			require.EqualValues(t, 1, a["backlog"].AsInt64())
		case "notifier.Publish":
			if a := attrs(e); a["error"].AsString() != "" {
				failed++
				require.Equal(t, "boom", a["error"].AsString())
				require.EqualValues(t, 0, a["stored"].AsInt64())
			}
		}
	}
	require.Equal(t, 1, slow)
	require.Equal(t, 1, failed)
}

func TestTrace_NoEventsWhenTheSpanDoesNotRecord(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	ctx, events := traced(t, sdktrace.NeverSample())
	b := mkBlocks("unsampled", 1)[0]
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
	recv(t, s)
	require.Empty(t, events())

	// Neither metrics nor a recording span nor debug logging: the probe
	// stays off, so the operation reads no clock.
	var p probe
	p.begin(n, ctx)
	require.False(t, p.on())
}

// logLines captures the JSON lines that the logger bitswap/notifier writes at
// level and above while the test runs, through go-log's pipe reader.
func logLines(t *testing.T, level string) func() []map[string]any {
	t.Helper()
	old, err := logging.SubsystemLevelName("bitswap/notifier")
	require.NoError(t, err)
	require.NoError(t, logging.SetLogLevel("bitswap/notifier", level))
	lvl, err := logging.Parse(level)
	require.NoError(t, err)
	pr := logging.NewPipeReader(logging.PipeFormat(logging.JSONOutput), logging.PipeLevel(lvl))
	lines := make(chan []map[string]any, 1)
	go func(r *logging.PipeReader) {
		var got []map[string]any
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["logger"] == "bitswap/notifier" {
				got = append(got, m)
			}
		}
		lines <- got
	}(pr)
	var got []map[string]any
	stop := func() []map[string]any {
		if pr != nil {
			require.NoError(t, pr.Close())
			pr = nil
			select {
			case got = <-lines:
			case <-time.After(hang):
				t.Fatal("log reader hung")
			}
		}
		return got
	}
	t.Cleanup(func() {
		stop()
		require.NoError(t, logging.SetLogLevel("bitswap/notifier", old))
	})
	return stop
}

func TestLog_SlowConsumerAndBlockstoreErrors(t *testing.T) {
	stop := logLines(t, "error")
	bs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, bs, WithBufferSize(1), WithMaxPending(2))
	ctx := context.Background()
	b := mkBlocks("log", 2)
	s := mustSub(t, n, 42)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	for i := 0; s.Err() == nil; i++ {
		require.Less(t, i, 10)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{b[0].Cid()}}))
	}
	bs.onGet = func(cid.Cid) error { return errBoom }
	s2 := mustSub(t, n, 43)
	require.ErrorIs(t, s2.Subscribe(ctx, b[1].Cid()), errBoom)
	// A request cancelled by its caller is not a blockstore failure: nothing
	// is logged.
	cctx, cancel := context.WithCancel(ctx)
	bs.onGet = func(cid.Cid) error { cancel(); return cctx.Err() }
	require.ErrorIs(t, s2.Subscribe(cctx, b[1].Cid()), context.Canceled)

	got := stop()
	require.Len(t, got, 2, "%v", got)
	require.Equal(t, "error", got[0]["level"])
	require.Equal(t, "subscription ended as a slow consumer", got[0]["msg"])
	require.EqualValues(t, 42, got[0]["subscription"])
	require.EqualValues(t, 2, got[0]["backlog"])
	require.Equal(t, "blockstore error", got[1]["msg"])
	require.Equal(t, "Subscribe", got[1]["op"])
	require.Contains(t, got[1]["err"], "boom")
}

func TestLog_DebugLineOnlyAtDebugLevel(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	ctx := context.Background()
	b := mkBlocks("debug", 2)

	stop := logLines(t, "info")
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[:1]}))
	require.Empty(t, stop(), "no debug line above debug level")

	stop = logLines(t, "debug")
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[1:]}))
	got := stop()
	require.Len(t, got, 1)
	require.Equal(t, "debug", got[0]["level"])
	require.Equal(t, "Publish", got[0]["msg"])
	require.EqualValues(t, 1, got[0]["stored"])
}

// A one-key Subscribe whose first Get fails, but which starts over because a
// Publish touched its key during that Get, and whose second Get succeeds,
// returns nil: the observers report no blockstore error either.
func TestLog_StartOverAfterAFailedGetLogsNoError(t *testing.T) {
	stop := logLines(t, "error")
	bs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, bs)
	k := mkBlocks("log-over", 1)[0].Cid()
	gets := 0
	bs.onGet = func(cid.Cid) error {
		if gets++; gets == 1 {
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k}}))
			return errBoom
		}
		return nil
	}
	s := mustSub(t, n, 44)
	require.NoError(t, s.Subscribe(ctx, k))
	require.Equal(t, 2, gets, "the Subscribe must start over")
	require.True(t, s.Wants(k))
	require.Empty(t, stop())
}

// A store's own timeout is a failure of the blockstore, though its error
// wraps context.DeadlineExceeded as a cancelled call's does: while the
// caller's ctx is live, every path logs it and counts it. Only the caller's
// ctx ending is not one (TestLog_SlowConsumerAndBlockstoreErrors).
func TestLog_StoreTimeoutIsABlockstoreError(t *testing.T) {
	stop := logLines(t, "error")
	bs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, bs)
	timeout := fmt.Errorf("datastore: write: %w", context.DeadlineExceeded)
	b := mkBlocks("timeout", 3)
	bs.onPutMany = func([]blocks.Block) error { return timeout }
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: b[:1]}), context.DeadlineExceeded)
	bs.onPutMany = nil
	bs.onGet = func(cid.Cid) error { return timeout }
	s := mustSub(t, n, 1)
	require.ErrorIs(t, s.Subscribe(ctx, b[1].Cid()), context.DeadlineExceeded) // one key: subscribeOne
	err := s.Subscribe(ctx, b[1].Cid(), b[2].Cid())                            // the general path
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "notifier: subscribe: check blockstore for ", "the error returned says what failed")

	got := stop()
	require.Len(t, got, 3, "%v", got)
	for i, op := range []string{"Publish", "Subscribe", "Subscribe"} {
		require.Equal(t, "blockstore error", got[i]["msg"])
		require.Equal(t, op, got[i]["op"])
		// The store's own error on every path: the general Subscribe logged
		// it wrapped in its own message (review).
		require.Equal(t, timeout.Error(), got[i]["err"], "%s %d: the store's error, unwrapped", op, i)
	}
}
