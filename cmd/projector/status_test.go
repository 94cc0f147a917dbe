package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/shred"
)

// status on a projection that never ran says so plainly and exits 3 (not ready),
// whether the framework schema does not exist, exists empty, or exists without a
// position for this projection; and it creates nothing: status only reads.
func TestStatusOfAProjectionThatNeverRanSaysSo(t *testing.T) {
	t.Parallel()
	f := newProcFixture(t, 3) // a framework schema with tables, and no position for f.projection
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 21, Users: 20})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 300)
	pool, empty := testenv.Postgres(t) // a schema without a table
	missing := testenv.UniqueName(t)   // no such schema
	for _, schema := range []string{missing, empty, f.schema} {
		args := []string{"status", "--brokers", strings.Join(testenv.Kafka(t), ","), "--topic", f.topic,
			"--database-url", testenv.Get(t).DatabaseURL, "--schema", schema, "--projection", f.projection.Name(), "--interval", "0"}
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		var code exitCode
		if !errors.As(err, &code) || code != 3 || !strings.Contains(out.String(), "NEVER RUN: no stored positions in this database") ||
			!strings.Contains(out.String(), "(300 events in the log)") {
			t.Fatalf("status with --schema %s: err %v, want exit 3 and never run said\n%s", schema, err, out.String())
		}
		t.Logf("status, framework schema %s: %s", schema, out.String())
		out.Reset()
		err = run(context.Background(), append(args, "--json"), &out, &out)
		var st projector.Status
		if jerr := json.Unmarshal(out.Bytes(), &st); jerr != nil || !errors.As(err, &code) || !st.NeverRun || st.Ready || len(st.Partitions) != 3 {
			t.Fatalf("status --json with --schema %s: %v %v\n%s", schema, err, jerr, out.String())
		}
	}
	var schemas, tables int
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1),
		(SELECT count(*) FROM pg_tables WHERE schemaname = $2)`, missing, empty).Scan(&schemas, &tables); err != nil {
		t.Fatal(err)
	}
	if schemas != 0 || tables != 0 {
		t.Fatalf("status created %d schemas named %s and %d tables in %s: it must only read", schemas, missing, tables, empty)
	}
}

// A failure names what failed and where: the read model's database, the key store's
// database (and only that one is called the key store's), the brokers.
func TestErrorsNameWhatFailedAndWhere(t *testing.T) {
	t.Parallel()
	const dead = "127.0.0.1:1"
	_, schema := testenv.Postgres(t)
	db := testenv.Get(t).DatabaseURL
	for _, c := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"status", "--database-url", "postgres://postgres:secret@" + dead + "/readmodel"},
			"database " + dead + "/readmodel (--database-url, DATABASE_URL): failed to connect", "key store"},
		{[]string{"dlq", "list", "--database-url", "postgres://postgres@" + dead + "/readmodel"},
			"database " + dead + "/readmodel (--database-url, DATABASE_URL)", "key store"},
		{[]string{"status", "--database-url", db, "--schema", schema, "--brokers", dead, "--topic", "trips-unreachable"},
			"Kafka at " + dead, "key store"},
		{[]string{"replay", "--until", "0:1", "--into", "nowhere", "--database-url", db, "--schema", schema, "--master-key", shred.NewMasterKey(),
			"--key-database-url", "postgres://postgres@" + dead + "/keys"},
			"the key store's database " + dead + "/keys (--key-database-url, PROJECTOR_KEY_DATABASE_URL)", "secret"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append(c.args, "--log-level=error"), &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), c.not) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: err %v\nwant %q named, and not %q", strings.Join(c.args[:1], " "), err, c.want, c.not)
		}
	}
}
