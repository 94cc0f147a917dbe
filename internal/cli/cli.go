// Package cli is what the commands share: flags that fall back to environment
// variables (12-factor) with every default shown in --help, subcommands, the zap
// logger, and output as a table or as JSON.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Flags is a flag set whose flags may each be set by an environment variable. A flag
// given on the command line wins over its variable; a bad value from either is an
// error naming the flag or the variable.
type Flags struct {
	fs    *flag.FlagSet
	env   map[string]string // flag name -> environment variable
	usage string
	args  []string // positional arguments, wherever they stood among the flags
}

// NewFlags returns a flag set for a command; usage heads its --help.
func NewFlags(name, usage string) *Flags {
	f := &Flags{fs: flag.NewFlagSet(name, flag.ContinueOnError), env: map[string]string{}, usage: usage}
	f.fs.SetOutput(io.Discard)
	return f
}

func (f *Flags) bind(name, env string) {
	if env != "" {
		f.env[name] = env
	}
}

func withEnv(usage, env string) string {
	if env == "" {
		return usage
	}
	return usage + " (env " + env + ")"
}

// String defines a string flag.
func (f *Flags) String(p *string, name, env, def, usage string) {
	f.fs.StringVar(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// Int defines an int flag.
func (f *Flags) Int(p *int, name, env string, def int, usage string) {
	f.fs.IntVar(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// Uint64 defines a uint64 flag.
func (f *Flags) Uint64(p *uint64, name, env string, def uint64, usage string) {
	f.fs.Uint64Var(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// Float64 defines a float64 flag.
func (f *Flags) Float64(p *float64, name, env string, def float64, usage string) {
	f.fs.Float64Var(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// Duration defines a duration flag.
func (f *Flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// Bool defines a bool flag.
func (f *Flags) Bool(p *bool, name, env string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, withEnv(usage, env))
	f.bind(name, env)
}

// ErrHelp is returned by Parse when -h or --help was asked for; the help was printed.
var ErrHelp = flag.ErrHelp

// Parse parses args, then fills each flag not given on the command line from its
// environment variable (an empty variable counts as unset). With -h or --help it prints the help to out and returns ErrHelp.
func (f *Flags) Parse(args []string, out io.Writer) error {
	f.args = nil
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.PrintHelp(out)
				return ErrHelp
			}
			return fmt.Errorf("%w (see --help)", err)
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" { // everything after -- is positional
			f.args = append(f.args, rest[1:]...)
			break
		}
		f.args = append(f.args, rest[0]) // a positional argument; flags may follow it
		args = rest[1:]
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	names := make([]string, 0, len(f.env))
	for n := range f.env {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		env := f.env[name]
		v := os.Getenv(env)
		if v == "" || given[name] { // an empty variable counts as unset
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			return fmt.Errorf("environment %s=%q: %w", env, v, err)
		}
	}
	return nil
}

// Args returns the positional arguments, in order, wherever they stood among the flags.
func (f *Flags) Args() []string { return f.args }

// PrintHelp writes the usage text and every flag with its default and variable.
func (f *Flags) PrintHelp(out io.Writer) {
	_, _ = fmt.Fprint(out, strings.TrimRight(f.usage, "\n")+"\n\n")
	if len(f.Names()) == 0 {
		_, _ = fmt.Fprintln(out, "Flags: none.")
		return
	}
	_, _ = fmt.Fprintln(out, "Flags:")
	f.PrintFlags(out, nil)
}

// Names returns the flags' names, sorted.
func (f *Flags) Names() []string {
	var names []string
	f.fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	return names
}

// PrintFlags writes every flag not in skip with its usage, default and variable.
func (f *Flags) PrintFlags(out io.Writer, skip map[string]bool) {
	f.fs.VisitAll(func(fl *flag.Flag) {
		if skip[fl.Name] {
			return
		}
		kind, usage := flag.UnquoteUsage(fl)
		head := "  --" + fl.Name
		if kind != "" {
			head += " " + kind
		}
		def := fl.DefValue
		if def == "" {
			def = `""`
		}
		_, _ = fmt.Fprintf(out, "%s\n      %s (default %s)\n", head, usage, def)
	})
}

// PrintSubcommandHelp writes the help of a command with subcommands (cmd SUB
// [flags]): the usage text, the flags every subcommand takes, then each
// subcommand's own. define defines SUB's flags on a flag set.
func PrintSubcommandHelp(out io.Writer, cmd, usage string, subs []string, define func(sub string, f *Flags)) {
	_, _ = fmt.Fprint(out, strings.TrimRight(usage, "\n")+"\n")
	if len(subs) == 0 {
		return
	}
	sets := make([]*Flags, len(subs))
	count := map[string]int{}
	for i, sub := range subs {
		sets[i] = NewFlags(cmd+" "+sub, "")
		define(sub, sets[i])
		for _, n := range sets[i].Names() {
			count[n]++
		}
	}
	shared, own := map[string]bool{}, map[string]bool{}
	for n, c := range count {
		shared[n], own[n] = c == len(subs), c != len(subs)
	}
	_, _ = fmt.Fprintf(out, "\nFlags of every %s subcommand:\n", cmd)
	sets[0].PrintFlags(out, own)
	for i, sub := range subs {
		if !hasOwn(sets[i], shared) {
			continue
		}
		_, _ = fmt.Fprintf(out, "\nMore flags of %s %s:\n", cmd, sub)
		sets[i].PrintFlags(out, shared)
	}
}

// hasOwn reports whether f has a flag not in shared.
func hasOwn(f *Flags, shared map[string]bool) bool {
	for _, name := range f.Names() {
		if !shared[name] {
			return true
		}
	}
	return false
}

// NewLogger builds the zap logger for a command: JSON lines, or a console encoder
// when stderr is a terminal. level is debug, info, warn or error.
func NewLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	if IsTerminal(os.Stderr) {
		cfg.Encoding = "console"
		cfg.EncoderConfig = zap.NewDevelopmentEncoderConfig()
	}
	cfg.EncoderConfig.TimeKey = "time"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Positive refuses a duration setting that is zero or negative, naming it.
func Positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s %v: must be positive", name, d)
	}
	return nil
}

// SplitList splits a comma-separated setting, dropping empty items and spaces.
func SplitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// DatabaseAddr names a PostgreSQL URL's server and database (host:port/database),
// without its credentials, for messages that say where a failure happened.
func DatabaseAddr(rawURL string) string {
	cfg, err := pgconn.ParseConfig(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))) + "/" + cfg.Database
}
