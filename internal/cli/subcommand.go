package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// ParseSubcommand picks a command's subcommand from args (cmd SUB [flags]) and parses
// SUB's flags, which define defines. With no subcommand, or -h/--help, it prints the
// usage with every subcommand's flags and returns "" (with an error when none was
// given); an unknown one is an error naming the choices.
func ParseSubcommand(cmd, usage string, args []string, stdout io.Writer, define func(sub string, f *Flags), valid ...string) (string, *Flags, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		PrintSubcommandHelp(stdout, cmd, usage, valid, define)
		if len(args) == 0 {
			return "", nil, fmt.Errorf("%s takes a subcommand: %s", cmd, strings.Join(valid, ", "))
		}
		return "", nil, nil
	}
	sub := args[0]
	if !slices.Contains(valid, sub) {
		return "", nil, fmt.Errorf("%s %s: want %s", cmd, sub, strings.Join(valid, ", "))
	}
	f := NewFlags(cmd+" "+sub, usage)
	define(sub, f)
	if err := f.Parse(args[1:], stdout); err != nil {
		return "", nil, err
	}
	return sub, f, nil
}
