package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/swapsim"
)

func TestRun_BothSideBySide(t *testing.T) {
	var out, errs strings.Builder
	code := run([]string{"-duration", "400ms", "-sessions", "4", "-peers", "4", "-progress", "100ms"}, &out, &errs)
	require.Equal(t, 0, code, "stderr: %s", errs.String())
	require.Regexp(t, `^metric +notifier +legacy +notifier/legacy +better`, out.String())
	require.Contains(t, errs.String(), "swapsim: notifier: 4 sessions")
	require.Regexp(t, `(?m)^notifier +0\.\ds +\S+ blocks/s`, errs.String(), "plain progress lines when not a terminal")
}

func TestRun_UsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-impl", "bitswap"}, {"-peers", "65"}, {"-nope"}, {"extra"}} {
		var out, errs strings.Builder
		require.Equal(t, 2, run(args, &out, &errs), "%q", args)
		require.Empty(t, out.String())
	}
	var out, errs strings.Builder
	require.Equal(t, 0, run([]string{"-h"}, &out, &errs))
	require.Contains(t, errs.String(), "Exit status")
	require.Contains(t, errs.String(), "-store")
}

func TestStatus_OnlyTheNotifierFails(t *testing.T) {
	bad := swapsim.Report{Impl: "legacy"}
	bad.Violations[swapsim.StaleCancel] = 1
	require.Equal(t, 0, status([]swapsim.Report{{Impl: "notifier"}, bad}))
	bad.Impl = "notifier"
	require.Equal(t, 1, status([]swapsim.Report{bad}))
	bad.Impl = "notifier-fetch"
	require.Equal(t, 1, status([]swapsim.Report{bad}))
	bad.Impl = "compat"
	require.Equal(t, 1, status([]swapsim.Report{bad}))
}

func TestParse_StallFollowsTheStore(t *testing.T) {
	o, err := parse([]string{"-store", "flatfs"}, &strings.Builder{})
	require.NoError(t, err)
	require.Equal(t, "both", o.impl)
	require.Equal(t, stallDefault("flatfs"), o.cfg.Stall)
	o, err = parse([]string{"-stall", "3s", "-progress", "0"}, &strings.Builder{})
	require.NoError(t, err)
	require.Equal(t, "3s", o.cfg.Stall.String())
	require.Nil(t, o.cfg.Progress)
}

func TestRun_WritesFiles(t *testing.T) {
	dir := t.TempDir()
	// -png is left out: drawing one takes seconds with -race (internal/swapsim
	// draws a coarse one).
	svg, js := filepath.Join(dir, "a.svg"), filepath.Join(dir, "a.json")
	var out, errs strings.Builder
	code := run([]string{
		"-duration", "400ms", "-sessions", "4", "-peers", "4", "-progress", "0", "-seed", "7",
		"-svg", svg, "-json", js,
	}, &out, &errs)
	require.Equal(t, 0, code, "stderr: %s", errs.String())

	b, err := os.ReadFile(svg)
	require.NoError(t, err)
	var doc struct {
		XMLName xml.Name
		Texts   []string `xml:"g>text"`
	}
	require.NoError(t, xml.Unmarshal(b, &doc))
	require.Equal(t, "svg", doc.XMLName.Local)
	require.Contains(t, strings.Join(doc.Texts, "\n"), "notifier: ")
	require.Contains(t, strings.Join(doc.Texts, "\n"), "legacy: ")

	b, err = os.ReadFile(js)
	require.NoError(t, err)
	var res struct {
		Schema string
		Config struct {
			Seed     uint64
			Sessions int
		}
		Runs []struct {
			Impl    string
			Metrics map[string]float64
		}
	}
	require.NoError(t, json.Unmarshal(b, &res))
	require.Equal(t, "swapsim/v1", res.Schema)
	require.Equal(t, uint64(7), res.Config.Seed)
	require.Equal(t, 4, res.Config.Sessions)
	require.Len(t, res.Runs, 2)
	for i, impl := range []string{"notifier", "legacy"} {
		require.Equal(t, impl, res.Runs[i].Impl)
		require.Positive(t, res.Runs[i].Metrics["blocks_per_s"])
		require.InDelta(t, 0.2, res.Runs[i].Metrics["load_s"], 0.15, "each runs half of -duration")
	}
}

// A file that cannot be created fails the command before the run, and the
// files created before it are removed.
func TestRun_UnwritableFile(t *testing.T) {
	dir := t.TempDir()
	svg, bad := filepath.Join(dir, "a.svg"), filepath.Join(dir, "no such dir", "a.json")
	var out, errs strings.Builder
	code := run([]string{"-impl", "notifier", "-progress", "0", "-svg", svg, "-json", bad}, &out, &errs)
	require.Equal(t, 2, code)
	require.Empty(t, out.String())
	require.Contains(t, errs.String(), "a.json")
	require.NotContains(t, errs.String(), "swapsim: notifier:", "no run")
	require.NoFileExists(t, svg)
}

// -faults outside [0, 1] is a usage error: nothing runs.
func TestRun_FaultsOutOfRange(t *testing.T) {
	for _, args := range [][]string{
		{"-faults", "1.5"},
		{"-faults", "-0.1"},
		{"-faults", "NaN"},
		{"-faults", "0.1", "-fault-stall", "1s"}, // a stall that passes for a lost block
	} {
		var out, errs strings.Builder
		require.Equal(t, 2, run(args, &out, &errs), "%q", args)
		require.Empty(t, out.String())
		require.Contains(t, errs.String(), "fault", "%q", args)
		require.NotContains(t, errs.String(), "swapsim: notifier:", "%q: no run", args)
	}
}

// A run with faults shows, in the table, that faults were injected.
func TestRun_FaultsAreCounted(t *testing.T) {
	var out, errs strings.Builder
	code := run([]string{"-impl", "notifier", "-duration", "300ms", "-sessions", "8", "-faults", "0.1", "-progress", "0"}, &out, &errs)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out.String(), errs.String())
	require.Regexp(t, `(?m)^  failed \(injected\) +[1-9]\d* *$`, out.String())
	require.Regexp(t, `(?m)^  stalled \(injected\) +[1-9]\d* *$`, out.String())
	require.Regexp(t, `(?m)^VIOLATIONS +0 *$`, out.String())
	require.Contains(t, errs.String(), "faults 0.1 (stall 20ms)")
	require.NotContains(t, errs.String(), "blockstore error", "the notifier's log of injected errors is quiet")
}

// -impl notifier-fetch runs alone, and its table counts Fetch's outcomes.
func TestRun_FetchCountsItsOutcomes(t *testing.T) {
	var out, errs strings.Builder
	code := run([]string{"-impl", "notifier-fetch", "-duration", "300ms", "-sessions", "8", "-progress", "0"}, &out, &errs)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out.String(), errs.String())
	require.Regexp(t, `^metric +notifier-fetch *\n`, out.String())
	require.Regexp(t, `(?m)^fetch hits +[1-9]\d* *$`, out.String())
	require.Regexp(t, `(?m)^fetch requests +[1-9]\d* *$`, out.String())
	require.Regexp(t, `(?m)^VIOLATIONS +0 *$`, out.String())
}
