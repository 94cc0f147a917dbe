package servers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Mailpit is the SMTP sink effects send to, with an HTTP API to read what
// arrived; scripts/stack.sh installs it with go install.
type Mailpit struct {
	// Host is the address both listeners bind. Default: HostDefault.
	Host string
	// SMTPPort is the SMTP listener's port. Required.
	SMTPPort int
	// HTTPPort is the web UI and API's port. Required.
	HTTPPort int
	// Dir holds its database, mailpit.db. Required.
	Dir string
	// Binary is the mailpit program. Default: CacheDir()/bin/mailpit.
	Binary string
	// Extra arguments, after the description's own (a test's
	// --smtp-allowed-recipients, say).
	Extra []string
}

func (m Mailpit) withDefaults() Mailpit {
	if m.Host == "" {
		m.Host = HostDefault
	}
	if m.Binary == "" {
		m.Binary = filepath.Join(CacheDir(), "bin", "mailpit")
	}
	return m
}

func (m Mailpit) validate() error {
	return required("mailpit", field{"SMTPPort", m.SMTPPort == 0}, field{"HTTPPort", m.HTTPPort == 0}, field{"Dir", m.Dir == ""})
}

// Name is "mailpit".
func (Mailpit) Name() string { return "mailpit" }

// Pattern is the program's name.
func (Mailpit) Pattern() string { return "mailpit" }

// StopSignal is SIGTERM.
func (Mailpit) StopSignal() syscall.Signal { return syscall.SIGTERM }

// SMTPAddr is host:port of its SMTP listener.
func (m Mailpit) SMTPAddr() string {
	m = m.withDefaults()
	return hostPort(m.Host, m.SMTPPort)
}

// APIURL is the base URL of its HTTP API.
func (m Mailpit) APIURL() string {
	m = m.withDefaults()
	return "http://" + hostPort(m.Host, m.HTTPPort)
}

// Args are mailpit's arguments. --max keeps the newest 200,000 messages (the default
// keeps 500, and a test counting deliveries must see them all — a run of the suite
// sends some tens of thousands); with no bound, the shared stack's store grew past
// 180,000 messages in a day of runs and a search took over 10 s.
func (m Mailpit) Args() []string {
	m = m.withDefaults()
	return append([]string{"--smtp", m.SMTPAddr(), "--listen", hostPort(m.Host, m.HTTPPort),
		"--database", filepath.Join(m.Dir, "mailpit.db"), "--max", "200000",
		"--disable-version-check", "--smtp-disable-rdns"}, m.Extra...)
}

// Check finds the binary.
func (m Mailpit) Check() error {
	m = m.withDefaults()
	if _, err := os.Stat(m.Binary); err != nil {
		return fmt.Errorf("mailpit: %w: %s", err, installHint)
	}
	return nil
}

// Prepare makes Dir.
func (m Mailpit) Prepare(context.Context) error {
	if err := m.validate(); err != nil {
		return err
	}
	return os.MkdirAll(m.Dir, 0o755)
}

// Command is mailpit in the foreground.
func (m Mailpit) Command(ctx context.Context) (*exec.Cmd, error) {
	m = m.withDefaults()
	if err := m.validate(); err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, m.Binary, m.Args()...), nil
}

// Ready checks the SMTP port and the API.
func (m Mailpit) Ready(ctx context.Context) error {
	m = m.withDefaults()
	if !PortOpen(ctx, m.Host, m.SMTPPort) {
		return fmt.Errorf("mailpit: nothing listens on %s", m.SMTPAddr())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL()+"/api/v1/info", nil)
	if err != nil {
		return err
	}
	req.Close = true // no idle connection left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mailpit: /api/v1/info answers %s", strconv.Itoa(resp.StatusCode))
	}
	return nil
}
