package testenv

import (
	"strings"
	"testing"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	full := map[string]string{
		EnvKafkaBrokers: "a:1,b:2", EnvDatabaseURL: "postgres://x", EnvRedisURL: "redis://r",
		EnvSMTPAddr: "s:25", EnvMailpitURL: "http://m/",
	}
	tests := []struct {
		name    string
		env     map[string]string
		ok      bool
		wantErr string
	}{
		{"none set", map[string]string{}, false, ""},
		{"all set", full, true, ""},
		{"partial", map[string]string{EnvKafkaBrokers: "a:1"}, true, "DATABASE_URL, REDIS_URL, SMTP_ADDR, MAILPIT_URL unset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok, err := fromEnv(func(k string) string { return tt.env[k] })
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok && (len(s.KafkaBrokers) != 2 || s.MailpitURL != "http://m") {
				t.Fatalf("stack = %+v", s)
			}
		})
	}
}

func TestUniqueNameIsSafeAndUnique(t *testing.T) {
	t.Parallel()
	a, b := UniqueName(t), UniqueName(t)
	if a == b {
		t.Fatalf("two calls gave %q", a)
	}
	if len(a) > 48 || unsafeChars.MatchString(a) {
		t.Fatalf("%q is not a safe identifier", a)
	}
}
