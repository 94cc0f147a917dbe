package chaos

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/sideeffects"
)

func ptr(v int64) *int64 { return &v }

func TestAuditViolations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		rows        []AuditRow
		back, stale int
	}{
		{"forward only", []AuditRow{{ID: 1, Partition: 0, Generation: 1, NewNext: 0}, {ID: 2, Partition: 0, Generation: 1, OldNext: ptr(0), NewNext: 5}}, 0, 0},
		{"went back", []AuditRow{{ID: 1, Generation: 1, OldNext: ptr(9), NewNext: 5}}, 1, 0},
		{"fenced member commits after a newer generation", []AuditRow{
			{ID: 1, Partition: 2, Member: "a", Generation: 1, NewNext: 0},
			{ID: 2, Partition: 2, Member: "b", Generation: 2, OldNext: ptr(0), NewNext: 10},
			{ID: 3, Partition: 2, Member: "a", Generation: 1, OldNext: ptr(10), NewNext: 12},
		}, 0, 1},
		{"generations per partition", []AuditRow{
			{ID: 1, Partition: 0, Generation: 3, NewNext: 0},
			{ID: 2, Partition: 1, Generation: 1, NewNext: 0},
		}, 0, 0},
	} {
		back, stale, _ := AuditViolations(tc.rows)
		if back != tc.back || stale != tc.stale {
			t.Errorf("%s: back %d stale %d, want %d %d", tc.name, back, stale, tc.back, tc.stale)
		}
	}
}

func TestCheckMails(t *testing.T) {
	t.Parallel()
	want := map[string]bool{"k1@projector.invalid": true, "k2@projector.invalid": true}
	for _, tc := range []struct {
		name      string
		mails     []string
		max       int
		ambiguous map[string]bool
		ok        bool
	}{
		{"once each", []string{"k1@projector.invalid", "k2@projector.invalid"}, 0, nil, true},
		{"missing", []string{"k1@projector.invalid"}, 0, nil, false},
		{"foreign key", []string{"k1@projector.invalid", "k2@projector.invalid", "k3@projector.invalid"}, 5, nil, false},
		{"twice, none allowed", []string{"k1@projector.invalid", "k1@projector.invalid", "k2@projector.invalid"}, 0, nil, false},
		{"twice, allowed", []string{"k1@projector.invalid", "k1@projector.invalid", "k2@projector.invalid"}, 1, nil, true},
		{"twice after a logged failure", []string{"k1@projector.invalid", "k1@projector.invalid", "k2@projector.invalid"}, 0, map[string]bool{"k1": true}, true},
	} {
		if c := CheckMails(want, tc.mails, tc.max, tc.ambiguous); c.OK != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, c, tc.ok)
		}
	}
}

func ev(t *testing.T, id, subject string, seq uint64, typ string, data any) events.Event {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{ID: id, Source: "t", Type: typ, Subject: subject, Sequence: seq, Data: b, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func TestVerifyCatchesWhatIsWrong(t *testing.T) {
	t.Parallel()
	reg := domain.Registry()
	reg1 := ev(t, "e1", "u1", 1, domain.TypeUserRegistered, domain.UserRegistered{UserID: "u1", Email: "a@x", Name: "A"})
	art := ev(t, "e2", "u1", 2, domain.TypeUserPublishedAnArticle, domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a1", Title: "T", Body: "B"})
	log := []Record{{Partition: 0, Offset: 0, Event: reg1}, {Partition: 0, Offset: 1, Event: art}, {Partition: 0, Offset: 2, Event: reg1}}
	hist := []Attempt{{EventID: "e1", Outcome: OK, Partition: 0, Offset: 0}, {EventID: "e2", Outcome: OK, Partition: 0, Offset: 1}}
	f, err := FoldLog(reg, Observed{Log: log, Stored: map[int]int64{0: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if f.Dups != 1 || len(f.Applied) != 2 || f.State.Users["u1"].ArticleCount != 1 {
		t.Fatalf("fold: %+v", f)
	}
	mail := domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, "e1"))
	good := Observed{Log: log, Stored: map[int]int64{0: 3}, ReadModel: f.State, Mails: []string{mail}}
	failing := func(obs Observed, exp Expect) []string {
		var out []string
		for _, c := range Verify(reg, hist, obs, exp) {
			if !c.OK {
				out = append(out, c.Name)
			}
		}
		return out
	}
	if bad := failing(good, Expect{Effects: true}); len(bad) != 0 {
		t.Fatalf("a correct run fails %v", bad)
	}

	// A read model missing the article; offsets short of the end; a mail sent twice.
	wrong := good
	wrong.ReadModel = domain.State{Users: map[string]domain.User{"u1": f.State.Users["u1"]}, Articles: map[string]domain.Article{}}
	wrong.Stored = map[int]int64{0: 1}
	wrong.Mails = []string{mail, mail}
	bad := strings.Join(failing(wrong, Expect{Effects: true}), ",")
	for _, name := range []string{"lag zero", "read model = fold", "no acked event lost", "effects once, same key"} {
		if !strings.Contains(bad, name) {
			t.Errorf("check %q did not fail: %s", name, bad)
		}
	}

	// An undecodable record that is not parked, and one parked without a reason.
	poison := good
	poison.Log = append(append([]Record(nil), log...), Record{Partition: 0, Offset: 3, DecodeErr: errors.New("invalid UTF-8")})
	poison.Stored = map[int]int64{0: 4}
	if b := failing(poison, Expect{Effects: true}); len(b) != 1 || b[0] != "parked only poison, with reasons" {
		t.Errorf("unparked poison: %v", b)
	}
	poison.Parked = []ParkedRow{{Partition: 0, Offset: 3, Subject: "p"}}
	if b := failing(poison, Expect{Effects: true, ParkedSubjects: map[string]bool{"p": true}}); len(b) != 1 {
		t.Errorf("parked without a reason: %v", b)
	}
	poison.Parked[0].Error = "data: invalid UTF-8"
	if b := failing(poison, Expect{Effects: true, ParkedSubjects: map[string]bool{"p": true}}); len(b) != 0 {
		t.Errorf("parked with a reason: %v", b)
	}

	// A parked effect run fails the effects check even with every mail delivered.
	pe := good
	pe.ParkedEffects = []ParkedEffect{{Key: "k", EventID: "e1", Error: "mail: dial: network is unreachable"}}
	if b := failing(pe, Expect{Effects: true}); len(b) != 1 || b[0] != "effects once, same key" {
		t.Errorf("parked effect: %v", b)
	}
	// ...unless its event is parked poison.
	pe.ParkedEffects[0].EventID = "p1"
	pe.Parked = []ParkedRow{{Partition: 9, Offset: 0, EventID: "p1", Subject: "p", Error: "undecodable"}}
	if b := failing(pe, Expect{Effects: true, ParkedSubjects: map[string]bool{"p": true}}); len(b) != 0 {
		t.Errorf("parked effect of a parked event: %v", b)
	}

	// U+FFFD in the read model.
	fffd := good
	u := f.State.Users["u1"]
	u.Name = "A\uFFFD"
	fffd.ReadModel = domain.State{Users: map[string]domain.User{"u1": u}, Articles: f.State.Articles}
	if b := strings.Join(failing(fffd, Expect{Effects: true}), ","); !strings.Contains(b, "U+FFFD") {
		t.Errorf("U+FFFD not caught: %s", b)
	}
}
