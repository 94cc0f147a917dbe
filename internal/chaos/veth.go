package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Veth is a network namespace joined to the host by a veth pair: the servers bind
// the host side's address, the projector runs inside the namespace, and a cut takes
// the namespace's end of the link down.
type Veth struct {
	NS     string
	Host   string // host-side interface
	Peer   string // namespace-side interface
	HostIP string
	NSIP   string
}

// NewVeth creates the namespace and the pair (10.231.N.1 on the host, .2 inside).
func NewVeth(ctx context.Context, seed uint64, n int) (*Veth, error) {
	id := fmt.Sprintf("%x%d", seed&0xfff, n)
	v := &Veth{NS: "chaos-" + id, Host: "cvh" + id, Peer: "cvn" + id,
		HostIP: fmt.Sprintf("10.231.%d.1", 100+n), NSIP: fmt.Sprintf("10.231.%d.2", 100+n)}
	steps := [][]string{
		{"ip", "netns", "add", v.NS},
		{"ip", "link", "add", v.Host, "type", "veth", "peer", "name", v.Peer},
		{"ip", "link", "set", v.Peer, "netns", v.NS},
		{"ip", "addr", "add", v.HostIP + "/24", "dev", v.Host},
		{"ip", "link", "set", v.Host, "up"},
		{"ip", "-n", v.NS, "addr", "add", v.NSIP + "/24", "dev", v.Peer},
		{"ip", "-n", v.NS, "link", "set", v.Peer, "up"},
		{"ip", "-n", v.NS, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			v.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return v, nil
}

// Cut takes the namespace's end of the link down: nothing passes either way.
func (v *Veth) Cut(ctx context.Context) error {
	return run(ctx, "ip", "-n", v.NS, "link", "set", v.Peer, "down")
}

// Heal brings it back up.
func (v *Veth) Heal(ctx context.Context) error {
	return run(ctx, "ip", "-n", v.NS, "link", "set", v.Peer, "up")
}

// Command wraps a command to run inside the namespace.
func (v *Veth) Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", v.NS, bin}, args...)...)
}

// Close deletes the pair and the namespace (idempotent, errors ignored).
func (v *Veth) Close(ctx context.Context) {
	_ = exec.CommandContext(ctx, "ip", "link", "del", v.Host).Run()
	_ = exec.CommandContext(ctx, "ip", "netns", "del", v.NS).Run()
}

func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
