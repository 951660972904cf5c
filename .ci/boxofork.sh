# shellcheck shell=bash
# boxofork.sh: make a copy of boxo wired to the drop-in layer of this module
# (MIGRATION.md section 1, "The drop-in swap"). A library of functions, to be
# sourced by the .ci scripts that test or measure boxo against the layer:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/boxofork.sh"
#
# It defines functions and a few boxofork_* variables, and nothing else: it
# sets no shell option, no trap and exports nothing. Every function returns
# non-zero with a message on stderr when a step fails, and checks each step
# itself, so it can be called under `if !` or `||`, where set -e does not
# apply. Every go command runs with GOWORK=off GO111MODULE=on GOFLAGS=-mod=mod
# (the environment must not change what is built), set for that command only.
#
# The wirings:
#   own     boxo's own layer, untouched (baseline)
#   apart   the two internal packages replaced by the shims in
#           bitswapcompat/testdata/boxofork/, each building its own part
#   shared  shims + client.go's New building both parts together:
#           bitswapcompat.NewWithOptions(nil, ...)          (notify only)
#   store   shims + client.go's New building both parts together on the
#           client's blockstore: bitswapcompat.NewWithOptions(bstore, ...)
#
# Functions (CHECKOUT is a checkout of github.com/bitswapsync/notifier, or a
# snapshot of one made by boxofork_snapshot):
#   boxofork_is_wiring W                 true if W is one of the wirings
#   boxofork_boxo_version CHECKOUT       print the boxo version CHECKOUT's go.mod selects
#   boxofork_boxo_dir VERSION            download boxo@VERSION into the module
#                                        cache (through the ordinary go command,
#                                        from outside any module) and print its Dir
#   boxofork_snapshot CHECKOUT DEST      copy CHECKOUT, without .git, to DEST (new)
#   boxofork_fingerprint DIR             sha256 (12 hex digits) of DIR's .go,
#                                        go.mod and go.sum files
#   boxofork_edit_client FILE ARG        the client.go edit, with blockstore ARG
#                                        (nil or bstore); fails if a line it
#                                        relies on is not there exactly once
#   boxofork_prepare WIRING DEST CHECKOUT BOXO_DIR [REPORT_DIR]
#                                        copy BOXO_DIR to DEST (must not exist),
#                                        make it writable, and wire it; see below
#   boxofork_add_tests DEST CHECKOUT     copy our tests of boxo's real client
#                                        (bitswapcompat/testdata/boxofork/bitswap)
#                                        into DEST's bitswap package
#   boxofork_cleanup DIR                 chmod -R u+w and rm -rf DIR

boxofork_notifier_mod=github.com/bitswapsync/notifier
boxofork_wirings=(own apart shared store)
# The two files of boxo that the shims replace, relative to boxo's root, and
# the shims, relative to the checkout.
boxofork_notifications=bitswap/client/internal/notifications/notifications.go
boxofork_sim=bitswap/client/internal/sessioninterestmanager/sessioninterestmanager.go
boxofork_client=bitswap/client/client.go
boxofork_shims=bitswapcompat/testdata/boxofork
# Import paths whose presence in a test binary means it uses the layer.
boxofork_replaced_re='^(github\.com/bitswapsync/notifier(/.*)?|github\.com/ipfs/boxo/bitswap/client/internal/(notifications|sessioninterestmanager))$'

boxofork_err() { echo "boxofork: $*" >&2; }

# boxofork_add_tests DEST CHECKOUT: copy CHECKOUT's own tests of boxo's real
# client ($boxofork_shims/bitswap/*_test.go) into DEST's bitswap package,
# where go test runs them beside boxo's; in every wiring, own included.
boxofork_add_tests() {
	local d=$1 checkout=$2 f
	for f in "$checkout/$boxofork_shims"/bitswap/*_test.go; do
		[ -f "$f" ] || { boxofork_err "no tests of ours in $checkout/$boxofork_shims/bitswap"; return 1; }
		[ -d "$d/bitswap" ] || { boxofork_err "$d has no bitswap package"; return 1; }
		cp "$f" "$d/bitswap/" || return 1
	done
}

# boxofork_go ARGS...: go with the module environment fixed.
boxofork_go() { GOWORK=off GO111MODULE=on GOFLAGS=-mod=mod go "$@"; }

boxofork_is_wiring() {
	local w
	for w in "${boxofork_wirings[@]}"; do
		[ "$1" = "$w" ] && return 0
	done
	return 1
}

boxofork_boxo_version() {
	local checkout=$1 v
	[ -f "$checkout/go.mod" ] || { boxofork_err "$checkout/go.mod not found"; return 1; }
	v=$(cd "$checkout" && GOWORK=off GO111MODULE=on GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' github.com/ipfs/boxo) ||
		{ boxofork_err "cannot read the boxo version from $checkout/go.mod"; return 1; }
	[ -n "$v" ] || { boxofork_err "$checkout/go.mod does not require github.com/ipfs/boxo"; return 1; }
	echo "$v"
}

boxofork_boxo_dir() {
	local version=$1 tmp dir
	# From an empty directory outside any module, so that no go.mod changes.
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/boxofork-dl.XXXXXX") || return 1
	dir=$(cd "$tmp" && boxofork_go mod download -json "github.com/ipfs/boxo@$version" |
		sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p') || dir=
	rmdir "$tmp" 2>/dev/null || true
	if [ -z "$dir" ] || [ ! -d "$dir" ]; then
		boxofork_err "go mod download github.com/ipfs/boxo@$version gave no Dir"
		return 1
	fi
	echo "$dir"
}

boxofork_snapshot() {
	local checkout=$1 dest=$2 f
	[ -e "$dest" ] && { boxofork_err "snapshot: $dest already exists"; return 1; }
	mkdir -p "$dest" || return 1
	# dotglob: keep .gitignore, .golangci.yml, ...; only .git is left out.
	local had_dotglob=0 had_nullglob=0
	shopt -q dotglob && had_dotglob=1
	shopt -q nullglob && had_nullglob=1
	shopt -s dotglob nullglob
	local rc=0
	for f in "$checkout"/*; do
		[ "${f##*/}" = .git ] && continue
		cp -R "$f" "$dest/" || { boxofork_err "cannot snapshot $f"; rc=1; break; }
	done
	[ "$had_dotglob" = 1 ] || shopt -u dotglob
	[ "$had_nullglob" = 1 ] || shopt -u nullglob
	return "$rc"
}

boxofork_fingerprint() {
	(cd "$1" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) |
		LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
}

# boxofork_edit_client FILE ARG: the client.go edit of MIGRATION.md, building
# the PubSub and the SessionInterestManager together on one Notifier with
# blockstore ARG (nil or bstore). Each line it relies on must occur exactly
# once, as boxo writes it; otherwise it fails, says which, and leaves FILE as
# it was.
boxofork_edit_client() {
	case $2 in
	nil | bstore) ;;
	*) boxofork_err "edit_client: blockstore argument must be nil or bstore, not '$2'"; return 1 ;;
	esac
	command -v perl >/dev/null || { boxofork_err "perl not found"; return 1; }
	BOXOFORK_BSTORE_ARG=$2 perl -e '
		use strict; use warnings;
		my ($f, $arg) = ($ARGV[0], $ENV{BOXOFORK_BSTORE_ARG});
		open(my $in, "<", $f) or die "boxofork: $f: $!\n";
		my $s = do { local $/; <$in> }; close $in;
		my @need = (
			["the line \"\tsim := bssim.New()\"", qr/^\tsim := bssim\.New\(\)\n/m],
			["the line \"\tnotif := notifications.New(bs.traceBlock)\"", qr/^\tnotif := notifications\.New\(bs\.traceBlock\)\n/m],
			["the line \"import (\"", qr/^import \(\n/m],
		);
		push @need, ["New with a parameter \"bstore blockstore.Blockstore\"",
			qr/^func New\([^\n]*\bbstore blockstore\.Blockstore\b/m] if $arg eq "bstore";
		for my $n (@need) {
			my $c = () = $s =~ /$n->[1]/g;
			die "boxofork: client.go edit: expected $n->[0] exactly once in $f, found it $c times\n" if $c != 1;
		}
		$s =~ s/^\tsim := bssim\.New\(\)\n/\tnotif, sim := bitswapcompat.NewWithOptions($arg, notifications.Options(bs.traceBlock)...)\n/m;
		$s =~ s/^\tnotif := notifications\.New\(bs\.traceBlock\)\n//m;
		$s =~ s/^import \(\n/import (\n\t"github.com\/bitswapsync\/notifier\/bitswapcompat"\n/m;
		open(my $out, ">", $f) or die "boxofork: $f: $!\n"; print $out $s; close $out or die "boxofork: $f: $!\n";
	' "$1"
}

# boxofork_prepare WIRING DEST CHECKOUT BOXO_DIR [REPORT_DIR]
#
# Copies BOXO_DIR (boxo's root, e.g. from boxofork_boxo_dir) to DEST, which
# must not exist, makes the copy writable and wires it as WIRING. For every
# wiring but own it puts the two shims of CHECKOUT in place, edits client.go
# (shared, store), requires $boxofork_notifier_mod@v0.0.0 in DEST/go.mod and
# replaces it with CHECKOUT (an absolute path is written; pass a snapshot if
# the checkout may change while DEST is in use), and merges CHECKOUT's go.sum
# into DEST's, so that no checksum database is needed once the module cache
# holds the modules. own is the copy alone: its go.mod is boxo's.
#
# With REPORT_DIR (an existing directory), it also writes there
# WIRING.client.go.diff (shared, store: diff -u of client.go) and
# WIRING.versions-changed (lines "module old -> new" for each of boxo's module
# versions that requiring our module raised; empty if none). A raised version
# is also reported on stderr as a WARNING; it does not fail.
boxofork_prepare() {
	if [ $# -lt 4 ] || [ $# -gt 5 ]; then
		boxofork_err "usage: boxofork_prepare WIRING DEST CHECKOUT BOXO_DIR [REPORT_DIR]"
		return 1
	fi
	local w=$1 d=$2 checkout=$3 boxo=$4 report=${5-}
	boxofork_is_wiring "$w" || { boxofork_err "unknown wiring '$w' (${boxofork_wirings[*]})"; return 1; }
	[ -e "$d" ] && { boxofork_err "$d already exists"; return 1; }
	[ -f "$boxo/go.mod" ] || { boxofork_err "$boxo is not a module root (no go.mod)"; return 1; }
	[ -z "$report" ] || [ -d "$report" ] || { boxofork_err "report directory $report does not exist"; return 1; }
	checkout=$(cd "$checkout" && pwd -P) || { boxofork_err "no checkout at $3"; return 1; }
	cp -R "$boxo" "$d" || return 1
	chmod -R u+w "$d" || return 1
	[ "$w" = own ] && return 0

	local f
	for f in "$boxofork_shims/notifications/notifications.go" \
		"$boxofork_shims/sessioninterestmanager/sessioninterestmanager.go"; do
		[ -f "$checkout/$f" ] || { boxofork_err "shim $checkout/$f not found"; return 1; }
	done
	for f in "$boxofork_notifications" "$boxofork_sim" "$boxofork_client"; do
		[ -f "$d/$f" ] || { boxofork_err "$boxo does not have $f, which the drop-in swap replaces or edits"; return 1; }
	done
	cp "$checkout/$boxofork_shims/notifications/notifications.go" "$d/$boxofork_notifications" || return 1
	cp "$checkout/$boxofork_shims/sessioninterestmanager/sessioninterestmanager.go" "$d/$boxofork_sim" || return 1
	case $w in
	shared) boxofork_edit_client "$d/$boxofork_client" nil || return 1 ;;
	store) boxofork_edit_client "$d/$boxofork_client" bstore || return 1 ;;
	esac
	if [ -n "$report" ] && [ "$w" != apart ]; then
		diff -u "$boxo/$boxofork_client" "$d/$boxofork_client" >"$report/$w.client.go.diff" ||
			[ $? -le 1 ] || return 1
	fi

	local before after
	before=$(cd "$d" && boxofork_go list -m all) || return 1
	(cd "$d" && boxofork_go mod edit -require="$boxofork_notifier_mod@v0.0.0" \
		-replace="$boxofork_notifier_mod=$checkout") || return 1
	# Our go.sum holds the sums of what our module adds.
	if [ -f "$checkout/go.sum" ]; then
		sort -u "$d/go.sum" "$checkout/go.sum" -o "$d/go.sum" || return 1
	fi
	after=$(cd "$d" && boxofork_go list -m all) || return 1
	# Versions of boxo's own requirements that adding our module raised.
	local changed
	changed=$(join -j1 <(sort <<<"$before") <(sort <<<"$after") |
		awk '$2 != $3 { print "  " $1 " " $2 " -> " $3 }')
	[ -n "$report" ] && printf '%s' "${changed:+$changed$'\n'}" >"$report/$w.versions-changed"
	if [ -n "$changed" ]; then
		echo "WARNING: requiring $boxofork_notifier_mod changes boxo's module versions ($w):" >&2
		echo "$changed" >&2
	fi
	return 0
}

boxofork_cleanup() {
	[ -n "${1-}" ] || return 0
	chmod -R u+w "$1" 2>/dev/null || true
	rm -rf "$1"
}

# boxofork_instrument_msgs DIR: instrument the boxo copy DIR (any wiring, own
# included, so that every wiring carries the same instrumentation) to break
# the messages that each node sends down by type, for boxo-bench -msgtypes.
# It adds the package bitswap/internal/wirecount, which counts per sending
# node; has testnet's networkClient.SendMessage classify every message it
# sends; has the session count its want-have broadcasts by cause; and makes
# benchmarks_test.go log each fetcher's counts as the field Wire of its
# runStats, read at the moment MsgSent is read. Only this copy is changed.
# Fails, leaving DIR partly edited, if a line it relies on is missing.
boxofork_instrument_msgs() {
	local d=$1
	[ -f "$d/bitswap/benchmarks_test.go" ] || { boxofork_err "instrument: $d has no bitswap/benchmarks_test.go"; return 1; }
	command -v perl >/dev/null || { boxofork_err "perl not found"; return 1; }
	mkdir -p "$d/bitswap/internal/wirecount" || return 1
	cat >"$d/bitswap/internal/wirecount/wirecount.go" <<'GO'
// Package wirecount counts, per sending node, the messages of a benchmark
// run by type. Added by .ci/boxofork.sh (boxofork_instrument_msgs) to a
// temporary copy of boxo; not part of boxo.
package wirecount

import (
	"sync"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

type pair struct {
	c cid.Cid
	p peer.ID
}

// Per (key, peer): what was sent so far.
const (
	sentWH = 1 << iota
	sentWB
	sentCancel
)

type node struct {
	n       map[string]uint64
	sets    map[string]map[peer.ID]struct{}
	peers   map[peer.ID]uint64
	wbPeers map[peer.ID]struct{}
	state   map[pair]uint8
}

var (
	mu    sync.Mutex
	nodes = map[peer.ID]*node{}
)

func get(self peer.ID) *node {
	nd := nodes[self]
	if nd == nil {
		nd = &node{n: map[string]uint64{}, peers: map[peer.ID]uint64{},
			wbPeers: map[peer.ID]struct{}{}, state: map[pair]uint8{},
			sets: map[string]map[peer.ID]struct{}{}}
		nodes[self] = nd
	}
	return nd
}

// Add adds v to counter key of node self.
func Add(self peer.ID, key string, v int) {
	mu.Lock()
	get(self).n[key] += uint64(v)
	mu.Unlock()
}

// AddPeer adds p to the set key of node self; Snapshot reports its size.
func AddPeer(self peer.ID, key string, p peer.ID) {
	mu.Lock()
	defer mu.Unlock()
	nd := get(self)
	if nd.sets[key] == nil {
		nd.sets[key] = map[peer.ID]struct{}{}
	}
	nd.sets[key][p] = struct{}{}
}

// Sent records message m, sent by self to to.
func Sent(self, to peer.ID, m bsmsg.BitSwapMessage) {
	mu.Lock()
	defer mu.Unlock()
	nd := get(self)
	nd.n["msgs"]++
	nd.peers[to]++
	var wb, wh, cancel int
	for _, e := range m.Wantlist() {
		k := pair{e.Cid, to}
		st := nd.state[k]
		switch {
		case e.Cancel:
			cancel++
			if st&(sentWH|sentWB) == 0 {
				nd.n["cancel-unwanted"]++ // a CANCEL for a want never sent to that peer
			}
			if st&sentCancel != 0 {
				nd.n["cancel-again"]++
			}
			st |= sentCancel
		case e.WantType == pb.Message_Wantlist_Block:
			wb++
			nd.wbPeers[to] = struct{}{}
			if st&sentCancel != 0 {
				nd.n["want-after-cancel"]++ // wanted again after a CANCEL to that peer
			}
			if st&sentWB != 0 {
				nd.n["wb-again"]++
			}
			st |= sentWB
		default:
			wh++
			if st&sentCancel != 0 {
				nd.n["want-after-cancel"]++
			}
			if st&(sentWH|sentWB) != 0 {
				nd.n["wh-again"]++
			}
			st |= sentWH
		}
		nd.state[k] = st
	}
	nd.n["e-want-block"] += uint64(wb)
	nd.n["e-want-have"] += uint64(wh)
	nd.n["e-cancel"] += uint64(cancel)
	if wb > 0 {
		nd.n["msgs-with-wb"]++
	}
	if wh > 0 {
		nd.n["msgs-with-wh"]++
	}
	if cancel > 0 {
		nd.n["msgs-with-cancel"]++
		if wb+wh == 0 {
			nd.n["msgs-cancel-only"]++
		}
	}
	if wb+wh+cancel == 0 {
		nd.n["msgs-no-wants"]++
	}
	if m.Full() {
		nd.n["msgs-full-wantlist"]++
	}
}

// Snapshot returns the counters of node self, with "peers" (peers sent to),
// "wb-peers" (peers sent a want-block) and "max-msgs-one-peer".
func Snapshot(self peer.ID) map[string]uint64 {
	mu.Lock()
	defer mu.Unlock()
	nd := get(self)
	out := make(map[string]uint64, len(nd.n)+3)
	for k, v := range nd.n {
		out[k] = v
	}
	out["peers"] = uint64(len(nd.peers))
	out["wb-peers"] = uint64(len(nd.wbPeers))
	var mx uint64
	for _, v := range nd.peers {
		mx = max(mx, v)
	}
	out["max-msgs-one-peer"] = mx
	for k, set := range nd.sets {
		out[k] = uint64(len(set))
	}
	return out
}
GO
	perl -e '
		use strict; use warnings;
		my $d = $ARGV[0];
		sub edit { my ($f, @subs) = @_;
			open(my $in, "<", "$d/$f") or die "boxofork: $d/$f: $!\n"; my $s = do { local $/; <$in> }; close $in;
			while (@subs) { my ($what, $re, $to) = splice @subs, 0, 3;
				my $c = () = $s =~ /$re/g;
				die "boxofork: instrument: expected $what exactly once in $f, found it $c times\n" if $c != 1;
				$s =~ s/$re/$to->()/e; }
			open(my $out, ">", "$d/$f") or die; print $out $s; close $out or die; }
		my $imp = sub { my $q = shift; sub { "import (\n\twirecount \"github.com/ipfs/boxo/bitswap/internal/wirecount\"\n" } };
		edit("bitswap/testnet/virtual.go",
			"the MessagesSent increment", qr/^(\tatomic\.AddUint64\(&nc\.stats\.MessagesSent, 1\)\n)/m, sub { "$1\twirecount.Sent(nc.local, to, message)\n" },
			"import (", qr/^import \(\n/m, $imp->());
		edit("bitswap/client/internal/session/session.go",
			"broadcast()", qr/^(func \(s \*Session\) broadcast\(ctx context\.Context, wants \[\]cid\.Cid\) \{\n)/m,
				sub { "$1\tif wants == nil {\n\t\twirecount.Add(s.self, \"bcast-idle\", 1)\n\t} else {\n\t\twirecount.Add(s.self, \"bcast-exhausted\", 1)\n\t}\n" },
			"the periodic search broadcast", qr/^(\ts\.broadcastWantHaves\(ctx, \[\]cid\.Cid\{randomWant\}\)\n)/m,
				sub { "\twirecount.Add(s.self, \"bcast-periodic\", 1)\n$1" },
			"the no-peers broadcast", qr/^(\t\ts\.broadcastWantHaves\(ctx, ks\)\n)/m,
				sub { "\t\twirecount.Add(s.self, \"bcast-nopeers\", 1)\n$1" },
			"broadcastWantHaves()", qr/^(func \(s \*Session\) broadcastWantHaves\(ctx context\.Context, wants \[\]cid\.Cid\) \{\n)/m,
				sub { "$1\twirecount.Add(s.self, \"bcast-keys\", len(wants))\n" },
			"the filter of ReceiveFrom", qr/^(\tinterestedRes := s\.sim\.FilterSessionInterested\(s\.id, ks, haves, dontHaves\)\n)/m,
				sub { "\tnks0 := len(ks)\n$1\twirecount.Add(s.self, \"sess-blocks-in\", len(interestedRes[0]))\n\twirecount.Add(s.self, \"sess-blocks-filtered\", nks0-len(interestedRes[0]))\n\tif len(interestedRes[0])+len(interestedRes[1]) > 0 {\n\t\twirecount.AddPeer(s.self, \"sess-peers\", from)\n\t}\n" },
			"import (", qr/^import \(\n/m, $imp->());
		my $bt = "bitswap/benchmarks_test.go";
		open(my $in, "<", "$d/$bt") or die; my $s = do { local $/; <$in> }; close $in;
		my $c = () = $s =~ /^\t+MsgSent:  nst\.MessagesSent,\n/mg;
		die "boxofork: instrument: expected MsgSent: nst.MessagesSent twice in $bt, found it $c times\n" if $c != 2;
		$s =~ s/^(\t+)(MsgSent:  nst\.MessagesSent,\n)/$1$2$1Wire:     wirecount.Snapshot(fetcher.Identity.ID()),\n/mg;
		$c = () = $s =~ /^type runStats struct \{\n/mg;
		die "boxofork: instrument: expected type runStats struct once in $bt\n" if $c != 1;
		$s =~ s/^(type runStats struct \{\n)/$1\tWire     map[string]uint64 `json:",omitempty"`\n/m;
		$s =~ s/^import \(\n/import (\n\twirecount "github.com\/ipfs\/boxo\/bitswap\/internal\/wirecount"\n/m or die;
		open(my $out, ">", "$d/$bt") or die; print $out $s; close $out or die;
	' "$d" || return 1
	(cd "$d" && gofmt -l bitswap/internal/wirecount bitswap/testnet/virtual.go \
		bitswap/client/internal/session/session.go bitswap/benchmarks_test.go >/dev/null) || return 1
}
