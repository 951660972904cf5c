// Package promtest binds go-metrics-interface to Prometheus for tests: each
// test that calls Registry gets a registry of its own, in which the metrics
// created until the test ends are registered under the names that
// go-metrics-prometheus gives them in a node (the scope's dots become
// underscores: ipfs.bitswap.notifier.wants is ipfs_bitswap_notifier_wants).
//
// go-metrics-prometheus itself registers into Prometheus' default registry,
// shared by every test of a binary; this binding keeps each test's metrics
// apart. The binding is injected once per test binary, at the first call of
// Registry, and the tests that call Registry run one at a time.
package promtest

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	metrics "github.com/ipfs/go-metrics-interface"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	inject sync.Once
	// mu is held by the test that owns reg, from Registry to its cleanup.
	mu  sync.Mutex
	reg atomic.Pointer[prometheus.Registry] // nil outside such a test: metrics go to a throwaway registry
)

// Registry injects the binding if needed and returns a registry that
// receives every metric created until t ends. It waits for another test that
// holds one to end.
func Registry(t testing.TB) *prometheus.Registry {
	t.Helper()
	inject.Do(func() {
		if err := metrics.InjectImpl(newCreator); err != nil {
			panic("promtest: " + err.Error())
		}
	})
	mu.Lock()
	r := prometheus.NewRegistry()
	reg.Store(r)
	t.Cleanup(func() {
		reg.Store(nil)
		mu.Unlock()
	})
	return r
}

type creator struct {
	reg        prometheus.Registerer
	name, help string
}

func newCreator(name, help string) metrics.Creator {
	// Called by metrics.New, from code that the test holding mu runs, or
	// from a test without a registry: then the metrics are dropped.
	var r prometheus.Registerer = prometheus.NewRegistry()
	if cur := reg.Load(); cur != nil {
		r = cur
	}
	return &creator{reg: r, name: strings.ReplaceAll(name, ".", "_"), help: help}
}

// register registers c, or returns the collector already registered under
// its name, as go-metrics-prometheus does.
func register[C prometheus.Collector](r prometheus.Registerer, c C) C {
	err := r.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old
		}
	}
	panic("promtest: " + err.Error())
}

func (c *creator) Counter() metrics.Counter {
	return register(c.reg, prometheus.NewCounter(prometheus.CounterOpts{Name: c.name, Help: c.help}))
}

func (c *creator) CounterVec(labels []string) metrics.CounterVec {
	return counterVec{register(c.reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: c.name, Help: c.help}, labels))}
}

func (c *creator) Gauge() metrics.Gauge {
	return register(c.reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: c.name, Help: c.help}))
}

func (c *creator) Histogram(buckets []float64) metrics.Histogram {
	return register(c.reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: c.name, Help: c.help, Buckets: buckets}))
}

func (c *creator) Summary(opts metrics.SummaryOpts) metrics.Summary {
	return register(c.reg, prometheus.NewSummary(prometheus.SummaryOpts{
		Name: c.name, Help: c.help,
		Objectives: opts.Objectives, MaxAge: opts.MaxAge, AgeBuckets: opts.AgeBuckets, BufCap: opts.BufCap,
	}))
}

type counterVec struct{ v *prometheus.CounterVec }

func (c counterVec) WithLabelValues(lvs ...string) metrics.Counter {
	return c.v.WithLabelValues(lvs...)
}
