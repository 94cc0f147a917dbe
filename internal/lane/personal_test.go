package lane

import (
	"testing"

	"github.com/projector/projector/internal/domain"
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
