package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/projector/projector/internal/cli"
)

// With no command, projector prints its usage to standard error and exits 2, in
// process and as the built binary; --help is not an error.
func TestNoCommandPrintsUsageToStderrAndExits2(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), nil, &out, &errOut)
	var code exitCode
	if !errors.As(err, &code) || code != 2 || out.Len() != 0 || !strings.Contains(errOut.String(), "Usage: projector COMMAND") {
		t.Fatalf("run with no arguments: err %v, stdout %q, stderr %q; want exit 2 and the usage on stderr", err, out.String(), errOut.String())
	}
	cmd := exec.Command(binary)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "Usage: projector COMMAND") {
		t.Fatalf("bin/projector with no arguments: %v, stdout %q, stderr %q; want exit 2 and the usage on stderr", err, stdout.String(), stderr.String())
	}
	cmd = exec.Command(binary, "frobnicate")
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("bin/projector frobnicate: %v, want exit 2", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"--help"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "Usage: projector COMMAND") {
		t.Fatalf("--help: %v\n%s", err, out.String())
	}
}

// Every command's --help lists its flags: the common ones, and for commands with
// subcommands each subcommand's own.
func TestEveryCommandsHelpListsItsFlags(t *testing.T) {
	t.Parallel()
	common := []string{"--brokers", "--topic", "--database-url", "--projection", "--schema", "env KAFKA_BROKERS"}
	for cmd, own := range map[string][]string{
		"run":      {"--listen", "--effects", "--startup-timeout", "PROJECTOR_STARTUP_TIMEOUT"},
		"status":   {"--ready-lag", "--json", "--interval"},
		"dlq":      {"More flags of dlq list:", "--all", "More flags of dlq retry:", "--subjects", "--effect string", "More flags of dlq skip:", "--ids"},
		"snapshot": {"Flags of every snapshot subcommand:", "--snapshot-dir", "More flags of snapshot list:", "--json", "More flags of snapshot prune:", "--keep"},
		"versions": {"More flags of versions list:", "--json"},
		"replay":   {"--until", "--into"},
		"migrate":  {"More flags of migrate status:", "--json"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), []string{cmd, "--help"}, &out, &out)
		if err != nil && !errors.Is(err, cli.ErrHelp) {
			t.Errorf("%s --help: %v", cmd, err)
		}
		for _, want := range append(common, own...) {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, want, out.String())
			}
		}
	}
	// A subcommand's own --help lists the common flags and its own.
	var out bytes.Buffer
	_ = run(context.Background(), []string{"snapshot", "prune", "--help"}, &out, &out)
	if !strings.Contains(out.String(), "--keep") || !strings.Contains(out.String(), "--database-url") {
		t.Errorf("snapshot prune --help:\n%s", out.String())
	}
}
