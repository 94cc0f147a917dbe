package readmodel_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// A table declared wrong is refused at start, with a message that names the table,
// the column and what is wrong.
func TestNewTableRefusesBadDeclarations(t *testing.T) {
	t.Parallel()
	p, err := readmodel.New("decl", 1, events.NewRegistry())
	require.NoError(t, err)
	type sumOnText struct {
		ID   string `db:"id"`
		Name string `db:"name,sum"`
	}
	type sumOnKey struct {
		ID int64 `db:"id,sum"`
	}
	type typo struct {
		ID string `db:"id"`
		N  int64  `db:"n,summ"`
	}
	type keyless struct {
		ID string `db:"id"`
	}
	require.PanicsWithValue(t, "readmodel: table a: column name is tagged sum but is the key or its field (string) is not an int, uint32 or smaller, or float",
		func() { readmodel.NewTable[string, sumOnText](p, "a", "id") })
	require.PanicsWithValue(t, "readmodel: table b: column id is tagged sum but is the key or its field (int64) is not an int, uint32 or smaller, or float",
		func() { readmodel.NewTable[int64, sumOnKey](p, "b", "id") })
	require.PanicsWithValue(t, `readmodel: table c: column n: unknown option "summ" in its db tag (the one option is sum)`,
		func() { readmodel.NewTable[string, typo](p, "c", "id") })
	require.PanicsWithValue(t, `readmodel: table d: no field of readmodel_test.keyless is tagged db:"key"`,
		func() { readmodel.NewTable[string, keyless](p, "d", "key") })
	require.PanicsWithValue(t, "readmodel: table e: primary key id is a string, the table's key type is int64",
		func() { readmodel.NewTable[int64, keyless](p, "e", "id") })
}
