package notifier_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
)

// FuzzNotifierModelPending is FuzzNotifierModel confined to the
// configurations in which a slow-consumer end can be left pending
// (Subscription.closeSlow): stall mode, a buffer of 0 to 2 messages and
// WithMaxPending 1 or 2. Its input is FuzzNotifierModel's, whose first two
// bytes pendingConfig moves into that space; its seeds are the scenarios of
// pending ends (fuzzSeeds' "stall-pending-*") and the inputs the fuzzer found
// there (testdata/fuzz/FuzzNotifierModelPending).
//
// Across FuzzNotifierModel's whole input space few inputs reach a pending
// end (9 of 816 of one cache corpus), and coverage guidance does not favour
// them once the parking code is covered: here every input starts in a
// configuration where the next overflow of a subscription that wants a
// reserved key leaves its end pending. After an 8-minute run (2026-12-05),
// 5 of the 122 inputs of its cache corpus left an end pending: more, not many.
func FuzzNotifierModelPending(f *testing.F) {
	for _, name := range pendingSeedNames() {
		data, err := encodeFuzzSeed(fuzzSeeds[name])
		if err != nil {
			f.Fatalf("seed %s: %v", name, err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer stallWatchdog("FuzzNotifierModelPending", fuzzWatchdog)()
		synctest.Test(t, func(t *testing.T) { runFuzzModel(t, pendingConfig(data)) })
	})
}

// pendingSeedNames are the names of fuzzSeeds' scenarios of pending ends.
func pendingSeedNames() []string {
	var names []string
	for name := range fuzzSeeds {
		if strings.HasPrefix(name, "stall-pending-") {
			names = append(names, name)
		}
	}
	return names
}

// pendingConfig returns data with its configuration bytes (fuzzDecoder) moved
// into FuzzNotifierModelPending's space, changing only what lies outside it:
// c0 gets stall mode, its shard count kept; c1 a buffer of 0, 1 or 2 (32
// becomes 1) and a max pending of 1 or 2 (0 becomes 1 or 2). The operations
// are left as they are. Inputs already in that space come back unchanged.
func pendingConfig(data []byte) []byte {
	out := make([]byte, max(len(data), 2))
	copy(out, data)
	c0, c1 := out[0], out[1]
	if mode := c0 & 7; mode < 4 || mode > 6 { // 4, 5, 6: stall mode
		out[0] = c0&^7 | (4 + mode%3)
	}
	if c1&3 == 3 { // buffer 32
		c1 = c1&^3 | 1
	}
	if v := c1 >> 2; v%3 == 0 { // max pending 0: one step to 1 or 2
		if v < 63 {
			c1 += 4
		} else {
			c1 -= 4
		}
	}
	out[1] = c1
	return out
}

// TestFuzzNotifierModelPending_SeedsKeepTheirConfig checks that pendingConfig
// leaves the seeds of pending ends, and the fuzzer's finds in the pending
// space, as they are, so that FuzzNotifierModelPending runs them as written,
// and that it moves every other configuration into that space.
func TestFuzzNotifierModelPending_SeedsKeepTheirConfig(t *testing.T) {
	names := pendingSeedNames()
	if len(names) < 4 {
		t.Fatalf("found %d seeds of pending ends, want at least 4", len(names))
	}
	for _, name := range names {
		data, err := encodeFuzzSeed(fuzzSeeds[name])
		if err != nil {
			t.Fatal(err)
		}
		if got := pendingConfig(data); !bytes.Equal(got, data) {
			t.Errorf("seed %s: config % x became % x", name, data[:2], got[:2])
		}
	}
	for c0 := range 256 {
		for c1 := range 256 {
			in := []byte{byte(c0), byte(c1), 9}
			got := pendingConfig(in)
			stall := got[0]&7 >= 4 && got[0]&7 <= 6
			buf, maxPending := got[1]&3, (got[1]>>2)%3
			if !stall || buf > 2 || maxPending == 0 || (got[0]>>3)%3 != (byte(c0)>>3)%3 || got[2] != 9 {
				t.Fatalf("pendingConfig(% x) = % x: want stall mode, buffer 0-2, max pending 1-2, the shards and operations kept", in, got)
			}
			if again := pendingConfig(got); !bytes.Equal(again, got) {
				t.Fatalf("pendingConfig(% x) = % x, but that becomes % x", in, got, again)
			}
		}
	}
	if got := pendingConfig(nil); len(got) != 2 {
		t.Fatalf("pendingConfig(nil) = % x, want the two configuration bytes", got)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzNotifierModelPending")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data := readFuzzFile(t, filepath.Join(dir, e.Name()))
		if got := pendingConfig(data); !bytes.Equal(got, data) {
			t.Errorf("%s: config % x became % x", e.Name(), data[:min(len(data), 2)], got[:2])
		}
	}
}

// readFuzzFile returns the input of a corpus file that holds one []byte
// value, as go test writes them.
func readFuzzFile(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	header, value, _ := strings.Cut(string(b), "\n")
	q, ok := strings.CutPrefix(strings.TrimSpace(value), "[]byte(")
	q, ok2 := strings.CutSuffix(q, ")")
	s, err := strconv.Unquote(q)
	if header != "go test fuzz v1" || !ok || !ok2 || err != nil {
		t.Fatalf("%s: not a corpus file of one []byte", file)
	}
	return []byte(s)
}
