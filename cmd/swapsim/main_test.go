package main

import (
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
}

func TestParse_StallFollowsTheStore(t *testing.T) {
	cfg, impl, err := parse([]string{"-store", "flatfs"}, &strings.Builder{})
	require.NoError(t, err)
	require.Equal(t, "both", impl)
	require.Equal(t, stallDefault("flatfs"), cfg.Stall)
	cfg, _, err = parse([]string{"-stall", "3s", "-progress", "0"}, &strings.Builder{})
	require.NoError(t, err)
	require.Equal(t, "3s", cfg.Stall.String())
	require.Nil(t, cfg.Progress)
}
