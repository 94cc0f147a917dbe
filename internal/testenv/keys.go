package testenv

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/projector/projector/pkg/shred"
)

var keysOnce sync.Once

// MasterKey returns the stack's personal-data master key (PROJECTOR_MASTER_KEY,
// which scripts/stack.sh writes), or, without one, sets a fresh key and a schema of
// this process's own in the environment, so commands run by the test find them.
func MasterKey(tb testing.TB) []byte {
	tb.Helper()
	Get(tb)
	keysOnce.Do(func() {
		if os.Getenv(shred.MasterKeyEnv) == "" {
			_ = os.Setenv(shred.MasterKeyEnv, shred.NewMasterKey())
			_ = os.Setenv("PROJECTOR_KEY_SCHEMA", "keys_"+UniqueName(tb))
		}
	})
	k, err := shred.ParseMasterKey(os.Getenv(shred.MasterKeyEnv))
	if err != nil {
		tb.Fatalf("%s: %v", shred.MasterKeyEnv, err)
	}
	return k
}

// Keys opens the stack's personal-data key store (the schema the commands use), as
// the projector and the producer see it.
func Keys(tb testing.TB) *shred.PGKeys {
	tb.Helper()
	master := MasterKey(tb)
	pool, _ := Postgres(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: os.Getenv("PROJECTOR_KEY_SCHEMA")})
	if err != nil {
		tb.Fatalf("key store: %v", err)
	}
	return k
}
