package projector_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// TestLostCommitsAreAppliedAgain: batches commit without waiting for the disk
// (Config.SyncCommit false), so a PostgreSQL crash may lose the last ones: their
// rows, their aggregates' marks and their position, together. Such a loss is
// simulated here by setting all three back in one transaction. A worker with
// nothing to write finds the stored position behind the one it committed within
// seconds, and one with a batch to write finds it at the batch's compare-and-set;
// either way the lost events are applied again from the log, once each, in order.
func TestLostCommitsAreAppliedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	p := notesProjection(t, f, &atomic.Bool{})
	var evs []events.Event
	for seq := uint64(1); seq <= 40; seq++ {
		evs = append(evs, note(t, "a", seq, false))
	}
	f.publish(evs...)
	cfg := f.config(p)
	cfg.BatchSize = 10
	_, stop := f.start(cfg)
	defer stop()
	f.waitCaughtUp(p, time.Minute)
	require.Equal(t, map[string][]int64{"a": seqs(1, 40)}, appliedSeqs(t, f, p))

	lose := func(after uint64) {
		t.Helper()
		ctx := context.Background()
		tx, err := f.pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		_, err = tx.Exec(ctx, `DELETE FROM `+p.Schema()+`.log WHERE seq > $1`, int64(after))
		require.NoError(t, err)
		tag, err := tx.Exec(ctx, `UPDATE `+pgx.Identifier{f.schema, "aggregates"}.Sanitize()+`
			SET last_sequence = $3, last_event_id = $4, recent = '\x'
			WHERE projection = $1 AND version = $2 AND subject = 'a'`, p.Name(), p.Version(), int64(after), note(t, "a", after, false).ID)
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())
		tag, err = tx.Exec(ctx, `UPDATE `+pgx.Identifier{f.schema, "offsets"}.Sanitize()+`
			SET next_offset = $3 WHERE projection = $1 AND version = $2 AND partition = 0`, p.Name(), p.Version(), int64(after))
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())
		require.NoError(t, tx.Commit(ctx))
	}
	applied := func(to int64) func() bool {
		return func() bool { return equal(appliedSeqs(t, f, p)["a"], seqs(1, to)) }
	}

	// Idle: nothing to write, yet the loss is found and repaired.
	lose(20)
	testenv.WaitFor(t, 30*time.Second, "the lost events applied again while idle", applied(40))

	// Busy: the next batch's compare-and-set finds the loss.
	lose(30)
	var more []events.Event
	for seq := uint64(41); seq <= 45; seq++ {
		more = append(more, note(t, "a", seq, false))
	}
	f.publish(more...)
	testenv.WaitFor(t, 30*time.Second, "the lost events applied again with the new ones", applied(45))
	f.waitCaughtUp(p, time.Minute)
	require.Equal(t, map[string][]int64{"a": seqs(1, 45)}, appliedSeqs(t, f, p), "each event once, in order")
}

// TestSyncCommitSetsTheBatchTransaction: a batch's transaction commits without the
// wait for the disk by default, and with it under SyncCommit.
func TestSyncCommitSetsTheBatchTransaction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	f.publish(note(t, "a", 1, false))
	for _, sync := range []bool{false, true} {
		reg := events.NewRegistry()
		events.Register[noted](reg, "Noted")
		p, err := readmodel.New(f.projectionName(), 1, reg)
		require.NoError(t, err)
		p.Migrate(`CREATE TABLE seen (setting text NOT NULL)`)
		readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, _ noted) error {
			w.Exec(`INSERT INTO seen VALUES (current_setting('synchronous_commit'))`)
			return nil
		})
		cfg := f.config(p)
		cfg.SyncCommit = sync
		_, stop := f.start(cfg)
		f.waitCaughtUp(p, time.Minute)
		stop()
		var got string
		require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT setting FROM `+p.Schema()+`.seen`).Scan(&got))
		require.Equal(t, map[bool]string{false: "off", true: "on"}[sync], got, "SyncCommit %v", sync)
	}
}
