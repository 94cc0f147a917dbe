package effectfire_test

import (
	"context"
	"testing"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/effectfire"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/sideeffects"
)

// Fire reaches the function an effect defined for the event's type, with the run
// and the decoded value; a type the effect does not react to is a permanent error.
func TestFireRunsTheEffectsFunction(t *testing.T) {
	t.Parallel()
	eff, err := sideeffects.Define("welcome", domain.Registry())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	sideeffects.On(eff, func(_ context.Context, run sideeffects.Run, ev events.Event, v domain.UserRegistered) error {
		got = append(got, run.Key, ev.ID, v.Email)
		return nil
	})
	d := events.Decoded{Event: events.Event{ID: "e1", Type: domain.TypeUserRegistered}, Value: domain.UserRegistered{Email: "a@example.com"}}
	if err := effectfire.Fire(context.Background(), eff, sideeffects.Run{Key: "k1"}, d); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "k1" || got[1] != "e1" || got[2] != "a@example.com" {
		t.Fatalf("the function saw %q", got)
	}
	d.Type = domain.TypeUserDeleted
	if err := effectfire.Fire(context.Background(), eff, sideeffects.Run{}, d); !sideeffects.IsPermanent(err) {
		t.Fatalf("a type the effect does not react to: %v, want a permanent error", err)
	}
}
