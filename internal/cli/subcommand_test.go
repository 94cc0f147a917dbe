package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseSubcommand(t *testing.T) {
	t.Parallel()
	var keep int
	define := func(sub string, f *Flags) {
		if sub == "prune" {
			f.Int(&keep, "keep", "", 3, "snapshots to keep")
		}
	}
	for _, tc := range []struct {
		args            []string
		sub, err, shown string
	}{
		{args: nil, err: "snap takes a subcommand: list, prune", shown: "More flags of snap prune"},
		{args: []string{"--help"}, shown: "--keep int"},
		{args: []string{"frob"}, err: "snap frob: want list, prune"},
		{args: []string{"prune", "--keep", "x"}, err: "see --help"},
		{args: []string{"prune", "--keep", "5", "extra"}, sub: "prune"},
	} {
		var out bytes.Buffer
		sub, f, err := ParseSubcommand("snap", "snap list|prune", tc.args, &out, define, "list", "prune")
		if sub != tc.sub || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Fatalf("%q: sub %q, err %v; want %q, %q", tc.args, sub, err, tc.sub, tc.err)
		}
		if !strings.Contains(out.String(), tc.shown) {
			t.Fatalf("%q: printed %q, want %q in it", tc.args, out.String(), tc.shown)
		}
		if sub != "" && (keep != 5 || len(f.Args()) != 1 || f.Args()[0] != "extra") {
			t.Fatalf("%q: keep %d, args %q", tc.args, keep, f.Args())
		}
	}
	_, _, err := ParseSubcommand("snap", "", []string{"list", "-h"}, &bytes.Buffer{}, define, "list")
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("list -h: %v, want ErrHelp", err)
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 120)
	for in, want := range map[string]string{"a\nb": "a b", long: long[:100] + "…"} {
		if got := OneLine(in); got != want {
			t.Fatalf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
