package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFlagsFallBackToEnvironment(t *testing.T) {
	t.Setenv("T_BROKERS", "env:1")
	t.Setenv("T_N", "7")
	t.Setenv("T_WAIT", "3s")
	var brokers string
	var n int
	var wait time.Duration
	f := NewFlags("x", "usage")
	f.String(&brokers, "brokers", "T_BROKERS", "def:1", "brokers")
	f.Int(&n, "n", "T_N", 1, "n")
	f.Duration(&wait, "wait", "T_WAIT", time.Second, "wait")
	if err := f.Parse([]string{"--n", "9", "rest", "--wait", "3s", "more"}, nil); err != nil {
		t.Fatal(err)
	}
	if brokers != "env:1" || n != 9 || wait != 3*time.Second || len(f.Args()) != 2 || f.Args()[0] != "rest" || f.Args()[1] != "more" {
		t.Fatalf("brokers %q n %d wait %v args %v", brokers, n, wait, f.Args())
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	t.Setenv("T_PARTITIONS", "twelve")
	var n int
	f := NewFlags("x", "usage")
	f.Int(&n, "partitions", "T_PARTITIONS", 12, "partitions")
	err := f.Parse(nil, nil)
	if err == nil || !strings.Contains(err.Error(), "T_PARTITIONS") || !strings.Contains(err.Error(), "twelve") {
		t.Fatalf("err = %v, want the variable and value named", err)
	}
}

func TestHelpShowsDefaultsAndVariables(t *testing.T) {
	var s string
	f := NewFlags("x", "x does things")
	f.String(&s, "topic", "T_TOPIC", "users", "the topic")
	var out bytes.Buffer
	if err := f.Parse([]string{"--help"}, &out); !errors.Is(err, ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"x does things", "--topic", "env T_TOPIC", "default users"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDatabaseAddrNamesServerAndDatabaseWithoutCredentials(t *testing.T) {
	for url, want := range map[string]string{
		"postgres://postgres:secret@127.0.0.1:15432/demo?sslmode=disable": "127.0.0.1:15432/demo",
		"postgres://db.example.test/orders":                               "db.example.test:5432/orders",
		"::nonsense":                                                      "(unparsable URL)",
	} {
		if got := DatabaseAddr(url); got != want || strings.Contains(got, "secret") {
			t.Errorf("DatabaseAddr(%q) = %q, want %q", url, got, want)
		}
	}
}

func TestSubcommandHelpListsSharedThenOwnFlags(t *testing.T) {
	var out bytes.Buffer
	PrintSubcommandHelp(&out, "thing", "thing a|b: does things", []string{"a", "b"}, func(sub string, f *Flags) {
		var s string
		var n int
		f.String(&s, "topic", "T_TOPIC", "users", "the topic")
		if sub == "b" {
			f.Int(&n, "keep", "", 3, "how many")
		}
	})
	got := out.String()
	shared, own := strings.Index(got, "Flags of every thing subcommand:\n  --topic"), strings.Index(got, "More flags of thing b:\n  --keep")
	if shared < 0 || own < shared || strings.Contains(got, "More flags of thing a") || strings.Count(got, "--topic") != 1 {
		t.Fatalf("help:\n%s", got)
	}
}
