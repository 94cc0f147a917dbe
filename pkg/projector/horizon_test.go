package projector_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/sideeffects"
)

// A restart with a wider effect horizon applies to the events the effect has not
// passed yet, and never to those below its watermark.
func TestEffectHorizonChangeAppliesToEventsNotPassedYet(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	rc, _ := testenv.Redis(t)
	w := newMailWorld(t, f, rc, testenv.MailpitServer(t), 10*time.Second)
	// Two hours old: outside a one-hour horizon, inside a three-hour one.
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 7, Users: 30, Start: time.Now().Add(-2 * time.Hour).UTC(), Prefix: w.prefix})
	if err != nil {
		t.Fatal(err)
	}
	regs := func(evs []events.Event) map[string]bool {
		out := map[string]bool{}
		for _, e := range evs {
			if e.Type == domain.TypeUserRegistered {
				out[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = true
			}
		}
		return out
	}
	first := f.generate(g, 200)
	p := f.domainProjection()
	cfg := w.config(t, p)
	cfg.EffectHorizon = time.Hour
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, time.Minute)
	stop()
	if n := len(w.mails(t)); n != 0 {
		t.Fatalf("%d mails for events older than the one-hour horizon", n)
	}

	second := f.generate(g, 200)
	cfg.EffectHorizon = 3 * time.Hour
	_, stop = f.start(cfg)
	defer stop()
	f.waitCaughtUp(p, time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, time.Minute)
	want, old := regs(second), regs(first)
	if len(want) == 0 {
		t.Fatal("the second workload registered nobody")
	}
	testenv.WaitFor(t, 30*time.Second, "a mail per registration not passed yet", func() bool { return len(w.mails(t)) >= len(want) })
	for _, m := range w.mails(t) {
		if old[m.MessageID] {
			t.Fatalf("mail %s for an event below the watermark: the wider horizon ran it again", m.MessageID)
		}
		if !want[m.MessageID] {
			t.Fatalf("mail %s matches no registration of the second workload", m.MessageID)
		}
	}
	if n := len(w.mails(t)); n != len(want) {
		t.Fatalf("%d mails, want one per registration of the second workload (%d)", n, len(want))
	}
}

// A replay whose history is older than the effect's horizon passes its folds
// unread: the effects do not read the log a second time behind the read model only
// to suppress every event, yet count each suppressed event as before. A fold with a
// single event newer than the horizon is read, and its mails go out.
func TestReplayPassesFoldsOlderThanTheHorizonUnread(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	rc, _ := testenv.Redis(t)
	w := newMailWorld(t, f, rc, testenv.MailpitServer(t), 10*time.Second)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 11, Users: 300, Start: time.Now().Add(-48 * time.Hour).UTC(), Prefix: w.prefix})
	if err != nil {
		t.Fatal(err)
	}
	old := f.generate(g, 3000)
	p := f.domainProjection()
	cfg := w.config(t, p)
	cfg.EffectHorizon = time.Hour
	cfg.BatchSize = 100 // many reads at hand: the replay folds
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, time.Minute)
	stop()
	if n := len(w.mails(t)); n != 0 {
		t.Fatalf("%d mails for events older than the horizon", n)
	}
	if folds, reads, _ := foldFigures(t, reg); folds == 0 || reads < 10 {
		t.Fatalf("the replay folded %d reads in %d folds: the test proves nothing", reads, folds)
	}
	reacts := 0
	for _, e := range old {
		if cfg.Effects[0].ReactsTo(e.Type) {
			reacts++
		}
	}
	if got := counterLabel(t, reg, "projector_effects_total", "outcome", "suppressed_horizon"); int(got) != reacts {
		t.Fatalf("%v runs suppressed by the horizon, want one per event the effect reacts to (%d)", got, reacts)
	}
	// What the effects read themselves: at most the reads that did not fold (the
	// log's tail on each partition), never the folds.
	read := counter(t, reg, "projector_effect_log_reads_total")
	if read > float64(2*cfg.BatchSize) {
		t.Fatalf("the effects read %v of %d events from the log themselves: the folds older than the horizon were read", read, len(old))
	}
	t.Logf("%d events, %d suppressed, %v read by the effects from the log", len(old), reacts, read)

	// New registrations behind old ones: the folds holding them are read, and their
	// mails go out.
	g2, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 12, Users: 300, Start: time.Now().UTC(), Prefix: w.prefix + "n"}) // mails to …@PREFIXn.example.test
	if err != nil {
		t.Fatal(err)
	}
	fresh := f.generate(g2, 3000)
	want := 0
	for _, e := range fresh {
		if e.Type == domain.TypeUserRegistered {
			want++
		}
	}
	reg2 := prometheus.NewRegistry()
	cfg.Registerer = reg2
	_, stop = f.start(cfg)
	defer stop()
	f.waitCaughtUp(p, time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, time.Minute)
	newMails := func() int { return len(w.mail.Messages(t, "@"+w.prefix+"n.example.test")) }
	testenv.WaitFor(t, 30*time.Second, "a mail per new registration", func() bool { return newMails() >= want })
	if n, stale := newMails(), len(w.mails(t)); n != want || stale != 0 {
		t.Fatalf("%d mails for new registrations, want %d; %d for old ones, want none", n, want, stale)
	}
	if read := counter(t, reg2, "projector_effect_log_reads_total"); read < float64(len(fresh))/2 {
		t.Fatalf("the effects read %v events from the log behind folds of new events (%d): a fold newer than the horizon was passed unread", read, len(fresh))
	}
}

// An event older than the effect's horizon is suppressed before the effect decodes
// it: one the effect cannot decode is counted as suppressed, never parked (a parked
// run could fire on a retry, past its horizon). The same effect parks the events
// inside its horizon that it cannot decode, so the decoding does fail.
func TestUndecodableEventOlderThanTheHorizonIsSuppressedNotParked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	rc, _ := testenv.Redis(t)
	ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: rc, Namespace: "undecodable" + f.topic, Lease: 10 * time.Second, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The effect's own registry takes a password change's hash for a number: every
	// such event of the log fails its decoding, none the read model's.
	type passwordAsNumber struct {
		UserID       string `json:"user_id"`
		PasswordHash int    `json:"password_hash"`
	}
	reg := events.NewRegistry()
	events.Register[passwordAsNumber](reg, domain.TypeUserChangedPassword)
	eff, err := sideeffects.Define("password_as_number", reg)
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, passwordAsNumber) error {
		runs.Add(1)
		return nil
	})
	changes := func(evs []events.Event) (n int) {
		for _, e := range evs {
			if e.Type == domain.TypeUserChangedPassword {
				n++
			}
		}
		return n
	}
	run := func(evs []events.Event) *prometheus.Registry {
		t.Helper()
		p := f.domainProjection()
		cfg := f.config(p)
		cfg.Effects, cfg.Ledger, cfg.EffectHorizon = []*sideeffects.Effect{eff}, ledger, time.Hour
		// No folds: the effect reads every event itself (a fold older than the
		// horizon would be passed unread, and its events never reach the decoding).
		cfg.FoldRows = projector.FoldRowsOff
		m := prometheus.NewRegistry()
		cfg.Registerer = m
		_, stop := f.start(cfg)
		defer stop()
		f.waitCaughtUp(p, time.Minute)
		waitStored(t, time.Minute, f.pool, f.schema, offsets.Key{Projection: p.Name(), Version: p.Version(), Topic: f.topic, Effect: eff.Name()}, f.endOffsets())
		return m
	}

	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 21, Users: 50, Start: time.Now().Add(-48 * time.Hour).UTC(), Prefix: "old" + f.topic})
	if err != nil {
		t.Fatal(err)
	}
	old := f.generate(g, 1500)
	if changes(old) == 0 {
		t.Fatal("the old events hold no password change: the test proves nothing")
	}
	m := run(old)
	if got := counterLabel(t, m, "projector_effects_total", "outcome", "suppressed_horizon"); int(got) != changes(old) {
		t.Fatalf("%v runs suppressed by the horizon, want one per old password change (%d)", got, changes(old))
	}
	if got := counterLabel(t, m, "projector_effects_total", "outcome", "parked"); got != 0 {
		t.Fatalf("%v runs parked for events older than the horizon, want none", got)
	}
	if n := count(t, f, f.schema, "parked_effects", "effect = '"+eff.Name()+"'"); n != 0 {
		t.Fatalf("%d parked runs stored for events older than the horizon, want none", n)
	}

	g2, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 22, Users: 50, Start: time.Now().UTC(), Prefix: "new" + f.topic})
	if err != nil {
		t.Fatal(err)
	}
	fresh := f.generate(g2, 1500)
	if changes(fresh) == 0 {
		t.Fatal("the new events hold no password change: the test proves nothing")
	}
	m = run(fresh)
	if got := counterLabel(t, m, "projector_effects_total", "outcome", "parked"); int(got) != changes(fresh) {
		t.Fatalf("%v runs parked inside the horizon, want one per new password change (%d): the decoding did not fail", got, changes(fresh))
	}
	if n := runs.Load(); n != 0 {
		t.Fatalf("the effect ran %d times on events it cannot decode", n)
	}
}
