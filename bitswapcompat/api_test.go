package bitswapcompat

import (
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/legacy"
)

// pubSubAPI is what boxo's bitswap client calls on its notifications.PubSub,
// and sessionInterestAPI what it calls on its *SessionInterestManager: the
// method sets that internal/legacy's client calls too.
type (
	pubSubAPI          = legacy.Notifications
	sessionInterestAPI = legacy.SessionInterests
)

var (
	_ pubSubAPI          = (*PubSub)(nil)
	_ sessionInterestAPI = (*SessionInterestManager)(nil)
)

// TestAPI_MethodSetsAreExact checks that the types have no exported method
// beyond those interfaces: a fork sees exactly what it calls today.
func TestAPI_MethodSetsAreExact(t *testing.T) {
	names := func(typ reflect.Type) []string {
		var out []string
		for i := range typ.NumMethod() {
			out = append(out, typ.Method(i).Name)
		}
		slices.Sort(out)
		return out
	}
	require.Equal(t, names(reflect.TypeFor[pubSubAPI]()), names(reflect.TypeFor[*PubSub]()))
	require.Equal(t, names(reflect.TypeFor[sessionInterestAPI]()), names(reflect.TypeFor[*SessionInterestManager]()))
}

// TestAPI_RootPackageDoesNotImportLibp2p checks that only this package pulls
// in libp2p: a user of the root package alone does not compile it.
func TestAPI_RootPackageDoesNotImportLibp2p(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	deps := func(pkg string) []string {
		out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return strings.Fields(string(out))
	}
	// The check can see libp2p: this package does import it.
	require.Contains(t, deps("github.com/bitswapsync/notifier/bitswapcompat"), "github.com/libp2p/go-libp2p/core/peer")
	root := deps("github.com/bitswapsync/notifier")
	require.Contains(t, root, "github.com/ipfs/go-cid")
	for _, d := range root {
		require.False(t, strings.HasPrefix(d, "github.com/libp2p/"), "root package depends on %s", d)
	}
}
