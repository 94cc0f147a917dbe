// Package testenv gives tests the real stack: Apache Kafka, PostgreSQL, Redis and
// Mailpit, and isolates each test inside it (its own topic, schema and key prefix).
//
// Endpoints come from the environment first — the variables scripts/stack.sh writes:
// KAFKA_BROKERS, DATABASE_URL, REDIS_URL, SMTP_ADDR and MAILPIT_URL. Where they are
// unset and a Docker engine answers, testcontainers-go starts the images that
// docker-compose.yml names, once per test binary. Where neither is available the test
// is skipped with a message saying how to get the stack, unless
// PROJECTOR_REQUIRE_STACK=1 (set by `make test` and CI), where it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variable names shared by the stack script, docker-compose.yml, the
// services and these helpers.
const (
	EnvKafkaBrokers = "KAFKA_BROKERS"
	EnvDatabaseURL  = "DATABASE_URL"
	EnvRedisURL     = "REDIS_URL"
	EnvSMTPAddr     = "SMTP_ADDR"
	EnvMailpitURL   = "MAILPIT_URL"
	// EnvRequireStack, when "1", turns a missing stack into a test failure.
	EnvRequireStack = "PROJECTOR_REQUIRE_STACK"
)

// Stack holds the endpoints of one running stack.
type Stack struct {
	KafkaBrokers []string // host:port of each broker
	DatabaseURL  string   // PostgreSQL connection URL
	RedisURL     string   // redis://host:port/db
	SMTPAddr     string   // Mailpit's SMTP listener, host:port
	MailpitURL   string   // Mailpit's HTTP API base URL
	Source       string   // "environment" or "testcontainers"
}

var (
	stackOnce sync.Once
	stack     *Stack
	stackErr  error
)

// Get returns the stack, starting containers on first use if the environment names
// none. It skips (or fails, under PROJECTOR_REQUIRE_STACK=1) when there is no stack.
func Get(tb testing.TB) *Stack {
	tb.Helper()
	stackOnce.Do(func() { stack, stackErr = discover() })
	if stackErr != nil {
		msg := fmt.Sprintf("no test stack: %v\n"+
			"start one with `make stack-up` (or `scripts/stack.sh up && eval \"$(scripts/stack.sh env)\"`), "+
			"or run a Docker engine for testcontainers", stackErr)
		if os.Getenv(EnvRequireStack) == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return stack
}

func discover() (*Stack, error) {
	if s, ok, err := fromEnv(os.Getenv); ok || err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return startContainers(ctx)
}

// fromEnv reads the stack from environment variables. ok is false when none is set;
// a partial set is an error naming what is missing.
func fromEnv(getenv func(string) string) (s *Stack, ok bool, err error) {
	names := []string{EnvKafkaBrokers, EnvDatabaseURL, EnvRedisURL, EnvSMTPAddr, EnvMailpitURL}
	var missing []string
	for _, n := range names {
		if getenv(n) == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) == len(names) {
		return nil, false, nil
	}
	if len(missing) > 0 {
		return nil, true, fmt.Errorf("stack environment incomplete: %s unset", strings.Join(missing, ", "))
	}
	return &Stack{
		KafkaBrokers: strings.Split(getenv(EnvKafkaBrokers), ","),
		DatabaseURL:  getenv(EnvDatabaseURL),
		RedisURL:     getenv(EnvRedisURL),
		SMTPAddr:     getenv(EnvSMTPAddr),
		MailpitURL:   strings.TrimRight(getenv(EnvMailpitURL), "/"),
		Source:       "environment",
	}, true, nil
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// UniqueName returns a name derived from the test's name plus a random suffix, safe
// as a Kafka topic, a PostgreSQL identifier and a Redis key prefix: lowercase
// letters, digits and underscores, at most 48 characters.
func UniqueName(tb testing.TB) string {
	tb.Helper()
	base := unsafeChars.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	base = strings.Trim(base, "_")
	if len(base) > 36 {
		base = base[len(base)-36:]
	}
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("random suffix: %v", err)
	}
	return "t_" + strings.TrimLeft(base, "_") + "_" + hex.EncodeToString(b[:])
}
