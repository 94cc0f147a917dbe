package projector_test

import (
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
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
