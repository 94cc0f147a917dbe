package domain_test

import (
	"reflect"
	"testing"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

func generate(t *testing.T, cfg domain.GeneratorConfig, n int) []events.Event {
	t.Helper()
	g, err := domain.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]events.Event, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func TestGeneratorIsDeterministicForASeed(t *testing.T) {
	t.Parallel()
	a := generate(t, domain.GeneratorConfig{Seed: 7, Users: 50}, 3000)
	b := generate(t, domain.GeneratorConfig{Seed: 7, Users: 50}, 3000)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave different events")
	}
	c := generate(t, domain.GeneratorConfig{Seed: 8, Users: 50}, 3000)
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds gave the same events")
	}
}

func TestGeneratorKeepsTheDomainsRules(t *testing.T) {
	t.Parallel()
	reg := domain.Registry()
	evs := generate(t, domain.GeneratorConfig{Seed: 1, Users: 40}, 20000)
	seq := map[string]uint64{}
	alive := map[string]bool{}
	articles := map[string]bool{}
	ids := map[string]bool{}
	counts := map[string]int{}
	for i, e := range evs {
		if ids[e.ID] {
			t.Fatalf("event %d: duplicate id %s", i, e.ID)
		}
		ids[e.ID] = true
		d, err := reg.Decode(e)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if e.Sequence != seq[e.Subject]+1 {
			t.Fatalf("event %d of %s: sequence %d after %d", i, e.Subject, e.Sequence, seq[e.Subject])
		}
		seq[e.Subject] = e.Sequence
		counts[e.Type]++
		switch v := d.Value.(type) {
		case domain.UserRegistered:
			if alive[v.UserID] || e.Sequence != 1 {
				t.Fatalf("event %d: %s registered twice", i, v.UserID)
			}
			alive[v.UserID] = true
		case domain.UserPublishedAnArticle:
			if !alive[v.UserID] || len(v.Body) < 250 {
				t.Fatalf("event %d: article by %s (alive %v), body %d bytes", i, v.UserID, alive[v.UserID], len(v.Body))
			}
			articles[v.ArticleID] = true
		case domain.ArticleDeleted:
			if !articles[v.ArticleID] {
				t.Fatalf("event %d: deletes unknown article %s", i, v.ArticleID)
			}
			delete(articles, v.ArticleID)
		case domain.UserDeleted:
			if !alive[v.UserID] {
				t.Fatalf("event %d: deletes unknown user %s", i, v.UserID)
			}
			alive[v.UserID] = false
		case domain.UserChangedPassword:
			if !alive[v.UserID] {
				t.Fatalf("event %d: unknown user %s", i, v.UserID)
			}
		}
	}
	for _, typ := range reg.Types() {
		if typ == shred.TypeSubjectForgotten {
			continue // published by forgetting a user (producer forget), not by the workload
		}
		if counts[typ] == 0 {
			t.Errorf("no %s in 20,000 events", typ)
		}
	}
}

func BenchmarkGeneratorNext(b *testing.B) {
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		g.Next()
	}
}

// BenchmarkDecodeRecord measures what the projector does to each record of the
// example domain before a handler sees it: read the envelope (events.Decode) and
// decode the data to its Go type (Registry.Decode). Reported per event.
func BenchmarkDecodeRecord(b *testing.B) {
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]events.Record, 4096)
	var size int
	for i := range recs {
		if recs[i], err = events.Encode(g.Next()); err != nil {
			b.Fatal(err)
		}
		size += len(recs[i].Value)
	}
	reg := domain.Registry()
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e, err := events.Decode(recs[i%len(recs)])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := reg.Decode(e); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
