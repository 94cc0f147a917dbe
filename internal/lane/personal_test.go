package lane

import (
	"encoding/json"
	"testing"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/shred"
)

func TestErrorTextsLoseThePersonalValues(t *testing.T) {
	reg := domain.Registry()
	ev, err := reg.New("t", "u1", domain.UserRegistered{UserID: "u1", Email: "ada@example.test", Name: "Ada Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	got := WithoutPersonal(reg, ev, "mail: refused: 550 <ada@example.test> unknown; Ada Lovelace, user u1")
	want := "mail: refused: 550 <[personal data: email]> unknown; [personal data: name], user u1"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	other, _ := reg.New("t", "u1", domain.UserChangedPassword{UserID: "u1", PasswordHash: "h"})
	if s := WithoutPersonal(reg, other, "ada@example.test"); s != "ada@example.test" {
		t.Fatalf("a type without personal data changed the text: %q", s)
	}
}

// A forgotten subject's event that Open redacted keeps no personal value in plain
// either: a field the producer left out of encryptedfields is redacted too, the
// subject's id is kept, and an event nothing was redacted in is left alone.
func TestRedactAllCoversPlainPersonalFields(t *testing.T) {
	reg := domain.Registry()
	ev, err := reg.New("t", "u1", domain.UserRegistered{UserID: "u1", Email: "ada@example.test", Name: "Ada <Lovelace>"})
	if err != nil {
		t.Fatal(err)
	}
	kept := ev
	redactAll(reg, &kept)
	if string(kept.Data) != string(ev.Data) {
		t.Fatalf("nothing redacted by Open, yet the data changed: %s", kept.Data)
	}
	ev.Redacted = []string{"email"}
	redactAll(reg, &ev)
	var got domain.UserRegistered
	if err := json.Unmarshal(ev.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Email != shred.Redacted || got.Name != shred.Redacted || got.UserID != "u1" || len(ev.Redacted) != 2 {
		t.Fatalf("after redactAll: %s, redacted %v", ev.Data, ev.Redacted)
	}
}
