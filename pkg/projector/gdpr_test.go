package projector_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
	"github.com/projector/projector/pkg/snapshot"
)

// privateKeys is a key store of the test's own: its own schema and master key.
func privateKeys(t testing.TB, pool *pgxpool.Pool) *shred.PGKeys {
	t.Helper()
	schema := "keys_" + testenv.UniqueName(t)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	master, err := shred.ParseMasterKey(shred.NewMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	k, err := shred.OpenPG(context.Background(), pool, master, shred.PGOptions{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// needle is a piece of personal data that must leave no trace.
type needle struct{ what, text string }

// assertTraces counts the rows of every table in the schemas whose text holds each
// needle: want says whether it must be found (a sanity check of the search) or not.
func assertTraces(t *testing.T, pool *pgxpool.Pool, schemas []string, want bool, needles ...needle) {
	t.Helper()
	ctx := context.Background()
	for _, n := range needles {
		found := 0
		for _, s := range schemas {
			rows, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1`, s)
			if err != nil {
				t.Fatal(err)
			}
			tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			for _, tb := range tables {
				var c int
				q := `SELECT count(*) FROM ` + pgx.Identifier{s, tb}.Sanitize() + ` t WHERE strpos(t::text, $1) > 0`
				if err := pool.QueryRow(ctx, q, n.text).Scan(&c); err != nil {
					t.Fatal(err)
				}
				if c > 0 && !want {
					t.Errorf("%s %q found in %s.%s (%d rows)", n.what, n.text, s, tb, c)
				}
				found += c
			}
		}
		if want && found == 0 {
			t.Errorf("%s %q not found in %v: the search cannot be trusted", n.what, n.text, schemas)
		}
	}
}

// fileTraces reports which needles occur in any file under dir.
func fileTraces(t *testing.T, dir string, needles ...needle) map[string]int {
	t.Helper()
	out := map[string]int{}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, n := range needles {
			if bytes.Contains(b, []byte(n.text)) {
				out[n.text]++
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walk %s: %d files, %v", dir, files, err)
	}
	return out
}

// waitStored waits until the offsets stored in fw for name (a projection, or an
// effect's watermark) at version reach end.
func waitStored(t *testing.T, timeout time.Duration, pool *pgxpool.Pool, fw string, k offsets.Key, end map[int]int64) {
	t.Helper()
	store := offsets.NewStore(fw)
	testenv.WaitFor(t, timeout, "positions of "+k.String()+" in "+fw+" to reach the log end", func() bool {
		var pos []offsets.Position
		var err error
		if k.Effect != "" {
			pos, err = store.ListEffect(context.Background(), pool, k.Effect, k.Projection, k.Version)
		} else {
			pos, err = store.List(context.Background(), pool, k.Projection, k.Version)
		}
		if err != nil {
			return false
		}
		got := map[int]int64{}
		for _, p := range pos {
			if p.Topic == k.Topic {
				got[p.Partition] = p.Next
			}
		}
		for part, e := range end {
			if e > 0 && got[part] < e {
				return false
			}
		}
		return true
	})
}

// The proof: after a user is forgotten, the live read model, a replay from
// zero, a bootstrap from a snapshot taken before the forgetting, a point-in-time
// replay and every snapshot on disk hold no trace of the user's email or name, while
// everyone else is intact (each compared with an independent fold of the log as
// decrypted now); the welcome mail of a user forgotten before it was sent is never
// sent, and no one gets a second mail on replay.
func TestForgottenUserLeavesNoTraceInReplaysBootstrapsPointInTimeOrSnapshots(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	ctx := context.Background()
	f := newFixture(t, 4)
	keys := privateKeys(t, f.pool)
	rc, _ := testenv.Redis(t)
	w := newMailWorld(t, f, rc, testenv.MailpitServer(t), 30*time.Second)
	reg := domain.Registry()

	// The workload, sealed as the producer seals it; the plaintext kept to search for.
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 11, Users: 40, Start: time.Now().UTC(), Prefix: w.prefix})
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]events.Event, 4000)
	for i := range plain {
		plain[i] = g.Next()
	}
	sealed := append([]events.Event(nil), plain...)
	if err := shred.Seal(ctx, keys, reg, sealed); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(sealed); i += 1000 {
		f.publish(sealed[i:min(i+1000, len(sealed))]...)
	}
	for _, e := range plain {
		if e.Type == domain.TypeUserRegistered {
			w.regs[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = e
		}
	}
	before, err := domain.Fold(reg, plain)
	if err != nil {
		t.Fatal(err)
	}
	var alive []string
	names := map[string]int{}
	for id, u := range before.Users {
		alive = append(alive, id)
		names[u.Name]++
	}
	sort.Strings(alive)
	if len(alive) < 3 {
		t.Fatalf("only %d users alive", len(alive))
	}
	userA, userB, userC := before.Users[alive[0]], before.Users[alive[1]], before.Users[alive[2]]
	needlesOf := func(u domain.User) []needle {
		out := []needle{{"email of " + u.UserID, u.Email}}
		if names[u.Name] == 1 { // a name another user shares cannot be searched for
			out = append(out, needle{"name of " + u.UserID, u.Name})
		}
		return out
	}
	gone := append(needlesOf(userA), needlesOf(userC)...)
	kept := needlesOf(userB)
	forgetUser := func(u domain.User) {
		t.Helper()
		fg, err := keys.Forget(ctx, u.UserID)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := reg.New("test", u.UserID, shred.SubjectForgotten{SubjectID: u.UserID, At: fg.At, Keys: fg.Keys})
		if err != nil {
			t.Fatal(err)
		}
		f.publish(ev)
	}

	// C is forgotten before any projector ran: its welcome mail must never go.
	forgetUser(userC)
	beforeA := f.endOffsets()

	p1 := f.domainProjection()
	dir := t.TempDir()
	store := snapshot.FolderStore{Dir: dir}
	cfg := w.config(t, p1)
	cfg.Keys, cfg.Snapshots = keys, &projector.SnapshotPolicy{Store: store}
	r1, _ := f.start(cfg)
	f.waitCaughtUp(p1, 2*time.Minute)
	w.waitEffects(t, f.pool, f.schema, p1, 2*time.Minute)

	// A snapshot before A is forgotten holds A's data (the search finds it), and a
	// copy of it escapes the scrubbing: the worst case for a bootstrap.
	m1, err := snapshot.Take(ctx, snapshot.Source{Pool: f.pool, Schema: f.schema, Projection: p1, Topic: f.topic}, store)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileTraces(t, dir, needlesOf(userA)...); got[userA.Email] == 0 {
		t.Fatal("the snapshot before the forgetting does not hold A's email: the file search cannot be trusted")
	}
	stale := snapshot.FolderStore{Dir: t.TempDir()}
	if err := os.CopyFS(filepath.Join(stale.Dir, p1.Name()+"_v1", m1.ID), os.DirFS(filepath.Join(dir, p1.Name()+"_v1", m1.ID))); err != nil {
		t.Fatalf("copy the snapshot (store layout changed?): %v", err)
	}
	if ms, err := stale.List(ctx, p1.Name(), 1); err != nil || len(ms) != 1 {
		t.Fatalf("the stale copy: %v %v", ms, err)
	}

	forgetUser(userA)
	f.waitCaughtUp(p1, 2*time.Minute)
	testenv.WaitFor(t, time.Minute, "the runner to rewrite the snapshot without A", func() bool {
		fs, err := keys.Forgotten(ctx, time.Time{})
		ms, lerr := store.List(ctx, p1.Name(), 1)
		// The rewrite ends when the old snapshot's folder is gone, a moment after the
		// new manifest appears: then the store's folder holds the one snapshot listed.
		entries, derr := os.ReadDir(filepath.Join(dir, p1.Name()+"_v1"))
		folders := 0
		for _, e := range entries {
			if e.IsDir() {
				folders++
			}
		}
		return err == nil && lerr == nil && derr == nil && len(ms) == 1 && !ms[0].ScrubbedThrough.Before(fs[len(fs)-1].At) && folders == 1
	})

	// The oracle: the log as it reads now, folded independently.
	var logMsgs []events.Event
	type pos struct {
		part int
		off  int64
	}
	var positions []pos
	for _, m := range testenv.ReadAll(t, f.topic) {
		e, err := eventlog.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		logMsgs = append(logMsgs, e)
		positions = append(positions, pos{m.Partition, m.Offset})
	}
	if err := shred.OpenAll(ctx, keys, logMsgs); err != nil {
		t.Fatal(err)
	}
	want, err := domain.Fold(reg, logMsgs)
	if err != nil {
		t.Fatal(err)
	}
	if want.Users[userA.UserID].Email != shred.Redacted || want.Users[userB.UserID].Email != userB.Email {
		t.Fatalf("the oracle: A %+v, B %+v", want.Users[userA.UserID], want.Users[userB.UserID])
	}
	equalsWant := func(schema string, want domain.State) {
		t.Helper()
		got, err := domain.Load(ctx, f.pool, schema)
		if err != nil {
			t.Fatal(err)
		}
		if d := domain.Diff(want, got, 10); d != "" {
			t.Fatalf("%s differs from the fold: %s", schema, d)
		}
	}

	// 1. The live read model, and the framework's tables (parked events, ids).
	equalsWant(p1.Schema(), want)
	assertTraces(t, f.pool, []string{p1.Schema(), f.schema}, false, gone...)
	assertTraces(t, f.pool, []string{p1.Schema()}, true, kept...)

	// 2. Every snapshot on disk.
	// m1 is rewritten after A's forgetting; perhaps once before too, when the runner
	// read C's SubjectForgotten after m1 was taken (m1 may hold C: only a rewrite
	// proves it clean). Either way one snapshot, m1's, scrubbed through A.
	ms, err := store.List(ctx, p1.Name(), 1)
	if err != nil || len(ms) != 1 || ms[0].Rewrites == "" || !ms[0].CreatedAt.Equal(m1.CreatedAt) || !reflect.DeepEqual(ms[0].Offsets, m1.Offsets) {
		t.Fatalf("snapshots after the forgetting: %+v %v", ms, err)
	}
	if fs, err := keys.Forgotten(ctx, time.Time{}); err != nil || ms[0].ScrubbedThrough.Before(fs[len(fs)-1].At) {
		t.Fatalf("the snapshot is scrubbed through %v, before A's forgetting (%v)", ms[0].ScrubbedThrough, err)
	}
	traces := fileTraces(t, dir, append(gone, kept...)...)
	for _, n := range gone {
		if traces[n.text] > 0 {
			t.Errorf("%s found in %d snapshot files", n.what, traces[n.text])
		}
	}
	if traces[userB.Email] == 0 {
		t.Error("B's email is in no snapshot file: the search cannot be trusted")
	}

	// 3. A replay from zero: a second version, with the welcome mail effect on the
	// same ledger.
	p2, err := domain.NewProjection(p1.Name(), 2)
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := w.config(t, p2)
	cfg2.Keys, cfg2.GroupID = keys, "g2-"+p2.Name() // a service of its own, beside v1
	_, stop2 := f.start(cfg2)
	f.waitCaughtUp(p2, 2*time.Minute)
	w.waitEffects(t, f.pool, f.schema, p2, 2*time.Minute)
	stop2()
	equalsWant(p2.Schema(), want)
	assertTraces(t, f.pool, []string{p2.Schema()}, false, gone...)

	// Mails: one per registration, none for C, none twice.
	seen := map[string]int{}
	for _, m := range w.mails(t) {
		seen[m.MessageID]++
	}
	for mid, e := range w.regs {
		var v domain.UserRegistered
		d, _ := reg.Decode(e)
		v, _ = events.As[domain.UserRegistered](d)
		wantN := 1
		if v.UserID == userC.UserID {
			wantN = 0
		}
		if seen[mid] != wantN {
			t.Errorf("%s (%s): %d welcome mails, want %d", v.UserID, mid, seen[mid], wantN)
		}
	}
	if n := len(w.mail.Messages(t, userC.Email)); n != 0 {
		t.Errorf("%d mails to the forgotten user C", n)
	}
	// C's run was skipped as forgotten (not fired, not parked for want of an address).
	fx := r1.Status().Effects[domain.WelcomeEmailEffect]
	if fx[projector.FxForgotten] != 1 || fx[projector.FxParked] != 0 {
		t.Errorf("v1 effect outcomes %v: want exactly C's run skipped as forgotten, none parked", fx)
	}

	// 4. A bootstrap from the stale copy (taken before A was forgotten, never
	// scrubbed): the restore purges, the catch-up redacts.
	bootProj := p1.InSchema(p1.Name() + "_boot")
	bootFW := p1.Name() + "_boot_fw"
	t.Cleanup(func() {
		_, _ = f.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{bootProj.Schema()}.Sanitize()+" CASCADE; DROP SCHEMA IF EXISTS "+pgx.Identifier{bootFW}.Sanitize()+" CASCADE")
	})
	bootCfg := f.config(bootProj)
	bootCfg.Schema, bootCfg.GroupID, bootCfg.Keys = bootFW, "g-boot-"+p1.Name(), keys
	br, err := projector.New(bootCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Restore(ctx, stale, m1.ID, snapshot.Target{Pool: f.pool, Schema: bootFW, Projection: bootProj, Topic: f.topic}); err != nil {
		t.Fatal(err)
	}
	if n, err := forget.Purge(ctx, f.pool, bootProj, keys, time.Time{}); err != nil || n != 2 {
		t.Fatalf("purge after restore: %d subjects, %v; want 2", n, err)
	}
	assertTraces(t, f.pool, []string{bootProj.Schema(), bootFW}, false, gone...)
	_, stopBoot := f.start(bootCfg)
	waitStored(t, 2*time.Minute, f.pool, bootFW, offsets.Key{Projection: bootProj.Name(), Version: bootProj.Version(), Topic: f.topic}, f.endOffsets())
	stopBoot()
	equalsWant(bootProj.Schema(), want)
	assertTraces(t, f.pool, []string{bootProj.Schema(), bootFW}, false, gone...)

	// 5. A point-in-time replay to before A was forgotten: from the scrubbed
	// snapshot, then the log up to the point — A reads redacted all the same.
	into := p1.Name() + "_pit"
	t.Cleanup(func() {
		_, _ = f.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{into}.Sanitize()+" CASCADE; DROP SCHEMA IF EXISTS "+pgx.Identifier{into + "_projector"}.Sanitize()+" CASCADE")
	})
	res, err := admin.ReplayUntil(ctx, admin.PointInTime{Pool: f.pool, Brokers: testenv.Kafka(t), Topic: f.topic,
		Projection: p1, Into: into, Until: beforeA, Store: store, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != ms[0].ID {
		t.Fatalf("the replay started from %q, want the rewritten snapshot %s", res.Snapshot, ms[0].ID)
	}
	var upTo []events.Event
	for i, e := range logMsgs {
		if positions[i].off < beforeA[positions[i].part] {
			upTo = append(upTo, e)
		}
	}
	wantPIT, err := domain.Fold(reg, upTo)
	if err != nil {
		t.Fatal(err)
	}
	equalsWant(into, wantPIT)
	assertTraces(t, f.pool, []string{into, into + "_projector"}, false, gone...)
	assertTraces(t, f.pool, []string{into}, true, kept...)
}

// A tampered ciphertext parks its event (and only its aggregate's later events) with
// a reason naming the event, the field and the key — never plaintext — and the
// stream goes on. A projector with no key store parks sealed events, saying so.
func TestTamperedPersonalDataParksWithAClearReason(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 2)
	keys := privateKeys(t, f.pool)
	reg := domain.Registry()
	mk := func(user string, seq uint64) events.Event {
		e, err := reg.New("test", user, domain.UserRegistered{UserID: user, Email: user + "@secret.example.test", Name: "Secret " + user},
			events.WithSequence(seq))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	evs := []events.Event{mk("ok-1", 1), mk("bad-1", 1), mk("ok-2", 1)}
	if err := shred.Seal(ctx, keys, reg, evs); err != nil {
		t.Fatal(err)
	}
	evs[1].Data = bytes.Replace(evs[1].Data, []byte(`"email":"`), []byte(`"email":"AAAA`), 1) // still base64, no longer authentic
	f.publish(evs...)

	p := f.domainProjection()
	cfg := f.config(p)
	cfg.Keys = keys
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 || parked[0].Subject != "bad-1" {
		t.Fatalf("parked %+v, want bad-1's event only", parked)
	}
	reason := parked[0].Error
	for _, want := range []string{evs[1].ID, `"email"`, evs[1].KeyID, "does not authenticate"} {
		if !bytes.Contains([]byte(reason), []byte(want)) {
			t.Errorf("parked reason %q does not name %s", reason, want)
		}
	}
	assertTraces(t, f.pool, []string{p.Schema(), f.schema}, false, needle{"bad-1's email", "bad-1@secret"}, needle{"bad-1's name", "Secret bad-1"})
	got, err := domain.Load(ctx, f.pool, p.Schema())
	if err != nil {
		t.Fatal(err)
	}
	if got.Users["ok-1"].Email != "ok-1@secret.example.test" || got.Users["ok-2"].Name != "Secret ok-2" {
		t.Fatalf("the other users: %+v", got.Users)
	}

	// Without a key store the projector cannot read sealed events: they park, saying so.
	p2 := f.domainProjection()
	f.start(f.config(p2))
	f.waitCaughtUp(p2, time.Minute)
	parked, err = admin.NewDLQ(f.pool, f.schema, p2.Name(), p2.Version()).List(ctx, false)
	if err != nil || len(parked) != 3 || !bytes.Contains([]byte(parked[0].Error), []byte("no key store")) {
		t.Fatalf("without keys: %+v %v", parked, err)
	}
}

// A forgetting is not held behind a parked event of its subject: the purge applies
// at once, and the parked event stays parked.
func TestForgettingIsNotHeldBehindAParkedEvent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	keys := privateKeys(t, f.pool)
	reg := domain.Registry()
	regd, err := reg.New("test", "x", domain.UserRegistered{UserID: "x", Email: "x@held.example.test", Name: "Held X"}, events.WithSequence(1))
	if err != nil {
		t.Fatal(err)
	}
	poison, err := reg.New("test", "x", domain.UserChangedPassword{UserID: "x", PasswordHash: "h"}, events.WithSequence(2))
	if err != nil {
		t.Fatal(err)
	}
	poison.SchemaVersion = 99 // from a newer build: it parks, and x's later events wait behind it
	evs := []events.Event{regd, poison}
	if err := shred.Seal(ctx, keys, reg, evs); err != nil {
		t.Fatal(err)
	}
	f.publish(evs...)
	p := f.domainProjection()
	cfg := f.config(p)
	cfg.Keys = keys
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	assertTraces(t, f.pool, []string{p.Schema()}, true, needle{"x's email", "x@held.example.test"})

	fg, err := keys.Forget(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := reg.New("test", "x", shred.SubjectForgotten{SubjectID: "x", At: fg.At, Keys: fg.Keys})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(ev)
	f.waitCaughtUp(p, time.Minute)
	assertTraces(t, f.pool, []string{p.Schema(), f.schema}, false, needle{"x's email", "x@held.example.test"}, needle{"x's name", "Held X"})
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(ctx, false)
	if err != nil || len(parked) != 1 || parked[0].EventID != poison.ID {
		t.Fatalf("parked %+v %v: want the poison event only", parked, err)
	}
}

// A forgetting whose SubjectForgotten never reached the log (the producer deleted the
// key, then failed to publish) is still purged: every runner purges the key store's
// forgotten subjects when it starts.
func TestForgettingWithoutItsEventIsPurgedAtStart(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	keys := privateKeys(t, f.pool)
	reg := domain.Registry()
	evs := make([]events.Event, 0, 2)
	for _, u := range []string{"gone", "kept"} {
		e, err := reg.New("test", u, domain.UserRegistered{UserID: u, Email: u + "@start.example.test", Name: "Start " + u}, events.WithSequence(1))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if err := shred.Seal(ctx, keys, reg, evs); err != nil {
		t.Fatal(err)
	}
	f.publish(evs...)
	p := f.domainProjection()
	cfg := f.config(p)
	cfg.Keys = keys
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	assertTraces(t, f.pool, []string{p.Schema()}, true, needle{"gone's email", "gone@start.example.test"})

	if _, err := keys.Forget(ctx, "gone"); err != nil { // and no SubjectForgotten published
		t.Fatal(err)
	}
	f.start(cfg)
	testenv.WaitFor(t, time.Minute, "the purge at start", func() bool {
		var n int
		_ = f.pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Schema(), "users"}.Sanitize()+` WHERE email = $1`, shred.Redacted).Scan(&n)
		return n == 1
	})
	assertTraces(t, f.pool, []string{p.Schema(), f.schema}, false, needle{"gone's email", "gone@start.example.test"}, needle{"gone's name", "Start gone"})
	assertTraces(t, f.pool, []string{p.Schema()}, true, needle{"kept's email", "kept@start.example.test"})
}

// A projector pointed at another key store (another database, schema or
// environment) does not read the events as forgotten: it parks them, naming the
// unknown key, and a retry against the right store would apply them.
func TestAKeyFromAnotherStoreParksInsteadOfRedacting(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	producerKeys, otherKeys := privateKeys(t, f.pool), privateKeys(t, f.pool)
	reg := domain.Registry()
	e, err := reg.New("test", "u", domain.UserRegistered{UserID: "u", Email: "u@other.example.test", Name: "U"}, events.WithSequence(1))
	if err != nil {
		t.Fatal(err)
	}
	evs := []events.Event{e}
	if err := shred.Seal(ctx, producerKeys, reg, evs); err != nil {
		t.Fatal(err)
	}
	f.publish(evs...)
	p := f.domainProjection()
	cfg := f.config(p)
	cfg.Keys = otherKeys
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(ctx, false)
	if err != nil || len(parked) != 1 || !bytes.Contains([]byte(parked[0].Error), []byte("neither held nor forgotten")) ||
		!bytes.Contains([]byte(parked[0].Error), []byte(evs[0].KeyID)) {
		t.Fatalf("parked %+v %v: want the event parked naming the unknown key", parked, err)
	}
	got, err := domain.Load(ctx, f.pool, p.Schema())
	if err != nil || len(got.Users) != 0 {
		t.Fatalf("users %+v %v: nothing applied as forgotten", got.Users, err)
	}
}
