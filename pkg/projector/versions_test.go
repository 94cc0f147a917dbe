package projector_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
)

// A reader querying the stable views in a loop while version 2 is built beside
// version 1 and then activated never sees an error, an empty or a half-built table.
func TestBlueGreenSwitchIsSeamlessForReaders(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 4)
	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 31, Users: 300})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(gen, 8000)
	v1 := f.domainProjection()
	versions := admin.Versions{Pool: f.pool, Schema: f.schema, Projection: v1.Name()}
	cfg := f.config(v1)
	cfg.ActivateWhenLive = true
	f.start(cfg)
	active := func() int {
		infos, err := versions.List(context.Background())
		if err != nil {
			return 0
		}
		for _, i := range infos {
			if i.Active {
				return i.Version
			}
		}
		return 0
	}
	testenv.WaitFor(t, time.Minute, "version 1 to go live and be activated", func() bool { return active() == 1 })

	// The reader: its own connection, the stable views only, in a loop.
	var queries, failures atomic.Int64
	var firstErr error
	var errOnce sync.Once
	stop := make(chan struct{})
	done := make(chan struct{})
	stable := pgx.Identifier{v1.Name()}.Sanitize()
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var users, articles, counted int64
			err := f.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM `+stable+`.users),
				(SELECT count(*) FROM `+stable+`.articles), (SELECT coalesce(sum(article_count), 0) FROM `+stable+`.users)`).Scan(&users, &articles, &counted)
			queries.Add(1)
			if err == nil && (users == 0 || articles == 0 || articles != counted) {
				err = errors.New("an empty or inconsistent read model through the views")
			}
			if err != nil {
				failures.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
		}
	}()

	f.generate(gen, 2000) // traffic goes on
	v2, err := domain.NewProjection(v1.Name(), 2)
	if err != nil {
		t.Fatal(err)
	}
	v2.Migrate(`ALTER TABLE users ADD COLUMN note text`) // version 2 changed the schema
	cfg2 := f.config(v2)
	cfg2.ActivateWhenLive = true
	cfg2.GroupID += "-v2"
	f.start(cfg2)
	testenv.WaitFor(t, 2*time.Minute, "version 2 to go live and be activated", func() bool { return active() == 2 })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	if failures.Load() > 0 {
		t.Fatalf("%d of %d reader queries failed across the switch; first: %v", failures.Load(), queries.Load(), firstErr)
	}
	var note *string
	if err := f.pool.QueryRow(context.Background(), `SELECT note FROM `+stable+`.users LIMIT 1`).Scan(&note); err != nil {
		t.Fatalf("the views do not show version 2's new column: %v", err)
	}
	if err := versions.Drop(context.Background(), 2); !errors.Is(err, admin.ErrActiveVersion) {
		t.Fatalf("dropping the active version: %v", err)
	}
	if err := versions.Drop(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	infos, err := versions.List(context.Background())
	if err != nil || len(infos) != 1 || infos[0].Version != 2 {
		t.Fatalf("after dropping v1: %+v %v", infos, err)
	}
	t.Logf("%d reader queries across the switch, none failed", queries.Load())
}
