package readmodel

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector/projector/pkg/events"
)

type KeyBase struct {
	Shard int    `db:"shard"`
	ID    string `db:"id"`
}

type keyRow struct {
	Note string `db:"note"`
	KeyBase
	Count int `db:"count"`
}

type keyPtrRow struct {
	Note string `db:"note"`
	*KeyBase
}

// A row's key is read at its offset, also through an embedded struct, and through
// reflection behind an embedded pointer: each gives the field's value.
func TestTheKeyIsReadFromItsFieldWhereverItIsEmbedded(t *testing.T) {
	p, err := New("keys", 1, events.NewRegistry())
	require.NoError(t, err)

	plain := NewTable[string, keyRow](p, "plain", "id")
	require.True(t, plain.pkDirect)
	require.Equal(t, "k-1", plain.key(keyRow{Note: "n", KeyBase: KeyBase{Shard: 3, ID: "k-1"}, Count: 2}))

	byShard := NewTable[int, keyRow](p, "by_shard", "shard")
	require.Equal(t, 3, byShard.key(keyRow{KeyBase: KeyBase{Shard: 3, ID: "k-1"}}))

	ptr := NewTable[string, keyPtrRow](p, "ptr", "id")
	require.False(t, ptr.pkDirect)
	require.Equal(t, "k-2", ptr.key(keyPtrRow{KeyBase: &KeyBase{ID: "k-2"}}))
}
