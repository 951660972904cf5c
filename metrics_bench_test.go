package notifier_test

import (
	"context"
	"testing"

	metrics "github.com/ipfs/go-metrics-interface"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/benchkit"
	"github.com/bitswapsync/notifier/internal/promtest"
)

// BenchmarkW2Metrics is W2 on the Notifier with and without WithMetrics,
// bound to a real Prometheus registry, side by side (-count interleaves
// them):
//
//	go test -run '^$' -bench 'W2Metrics' -count 10 > m.txt
//	go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da \
//		-col /metrics -filter '.unit:(ns/msg OR allocs/msg)' m.txt
//
// metrics=off pays only the hooks' checks (no metrics, no recording span,
// logger above debug).
func BenchmarkW2Metrics(b *testing.B) {
	p := benchW2Plan()
	for _, kind := range []string{benchkit.StoreNone, benchkit.StoreMem} {
		b.Run("store="+kind, func(b *testing.B) {
			for _, mk := range benchkit.Makers[1:3] { // notifier, notifier-func
				b.Run("impl="+mk.Name, func(b *testing.B) {
					b.Run("metrics=off", func(b *testing.B) { benchW2(b, kind, mk, p, 0) })
					b.Run("metrics=on", func(b *testing.B) { benchW2(b, kind, withMetrics(b, mk), p, 0) })
				})
			}
		})
	}
}

// withMetrics returns mk with WithMetrics in kubo's bitswap scope, bound to
// a Prometheus registry of b's own.
func withMetrics(b *testing.B, mk benchkit.Maker) benchkit.Maker {
	promtest.Registry(b)
	scope := metrics.CtxSubScope(metrics.CtxScope(context.Background(), "ipfs"), "bitswap")
	newImpl := mk.New
	mk.New = func(c benchkit.Config) (benchkit.Impl, error) {
		c.Extra = append(c.Extra, notifier.WithMetrics(scope))
		return newImpl(c)
	}
	return mk
}
