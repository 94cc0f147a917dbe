package service

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

// Defaults of the effect settings.
const (
	RedisURLDefault = "redis://127.0.0.1:16379/0"
	SMTPAddrDefault = "127.0.0.1:11025"
	MailFromDefault = "welcome@projector.invalid"
)

type effectFlags struct {
	names       string
	redisURL    string
	smtpAddr    string
	mailFrom    string
	namespace   string
	retention   time.Duration
	lease       time.Duration
	horizon     time.Duration
	concurrency int
	attempts    int
	batch       int
}

func (x *effectFlags) register(f *cli.Flags, s *service) {
	f.String(&x.names, "effects", "PROJECTOR_EFFECTS", s.effectNames(), "effects to run, comma-separated, or none")
	f.String(&x.redisURL, "redis-url", "REDIS_URL", RedisURLDefault, "Redis URL of the idempotency ledger")
	f.String(&x.smtpAddr, "smtp-addr", "SMTP_ADDR", SMTPAddrDefault, "SMTP server host:port for mail effects")
	f.String(&x.mailFrom, "mail-from", "PROJECTOR_MAIL_FROM", s.MailFrom, "sender of mail effects")
	f.String(&x.namespace, "ledger-namespace", "PROJECTOR_LEDGER_NAMESPACE", sideeffects.NamespaceDefault, "ledger key prefix: services sharing it share their effects' ledger")
	f.Duration(&x.retention, "ledger-retention", "PROJECTOR_LEDGER_RETENTION", sideeffects.RetentionDefault, "how long the ledger remembers a done effect")
	f.Duration(&x.lease, "effect-lease", "PROJECTOR_EFFECT_LEASE", sideeffects.LeaseDefault, "how long a run holds its key before another instance may take over")
	f.Duration(&x.horizon, "effect-horizon", "PROJECTOR_EFFECT_HORIZON", 0, "effects fire only for events newer than this, counted back from when the effect started on the partition (0: the ledger retention); a restart with another value moves it for the events not passed yet")
	f.Int(&x.concurrency, "effect-concurrency", "PROJECTOR_EFFECT_CONCURRENCY", projector.EffectConcurrencyDefault,
		"runs of one effect at once per partition: also the most a crash can run again (with the same keys)")
	f.Int(&x.attempts, "effect-attempts", "PROJECTOR_EFFECT_ATTEMPTS", projector.EffectMaxAttemptsDefault, "a run that fails this often parks")
	f.Int(&x.batch, "effect-batch", "PROJECTOR_EFFECT_BATCH", projector.EffectBatchSizeDefault,
		"keys reserved together, in one Redis round trip; each run is marked done as it finishes, so a crash re-runs at most the runs in flight (--effect-concurrency per partition), with the same keys")
}

// open builds the configured effects and their ledger; close releases the Redis client.
func (x *effectFlags) open(s *service, p *readmodel.Projection) ([]*sideeffects.Effect, *sideeffects.Ledger, func(), error) {
	names := effectNames(x.names)
	if len(names) == 0 {
		return nil, nil, func() {}, nil
	}
	if x.concurrency < 1 || x.attempts < 1 || x.batch < 1 || x.horizon < 0 {
		return nil, nil, nil, fmt.Errorf("--effect-concurrency %d and --effect-attempts %d must be at least 1, --effect-horizon %v not negative",
			x.concurrency, x.attempts, x.horizon)
	}
	effects, err := s.buildEffects(names, p, Deps{Mailer: sideeffects.Mailer{Addr: x.smtpAddr, From: x.mailFrom}})
	if err != nil {
		return nil, nil, nil, err
	}
	opts, err := redis.ParseURL(x.redisURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-url (REDIS_URL): %w", err)
	}
	client := redis.NewClient(opts)
	ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: client, Namespace: x.namespace, Lease: x.lease, Retention: x.retention})
	if err != nil {
		_ = client.Close()
		return nil, nil, nil, fmt.Errorf("--effect-lease/--ledger-retention: %w", err)
	}
	return effects, ledger, func() { _ = client.Close() }, nil
}

// buildEffects builds the effects named, each on the projection's registry.
func (s *service) buildEffects(names []string, p *readmodel.Projection, d Deps) ([]*sideeffects.Effect, error) {
	var effects []*sideeffects.Effect
	for _, n := range names {
		i := -1
		for j, e := range s.Effects {
			if e.Name == n {
				i = j
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("--effects (PROJECTOR_EFFECTS): unknown effect %q (known: %s, or none)", n, s.effectNames())
		}
		e, err := s.Effects[i].New(p.Registry(), d)
		if err != nil {
			return nil, fmt.Errorf("effect %s: %w", n, err)
		}
		if e.Name() != n {
			return nil, fmt.Errorf("effect %s: its New defined an effect named %q", n, e.Name())
		}
		effects = append(effects, e)
	}
	return effects, nil
}
