package testenv_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/projector/projector/internal/servers"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/shred"
)

// No Docker engine runs on the machines that build this project, so docker-compose.yml
// is checked here against what the code and scripts/stack.sh use: the same images,
// ports, broker settings and environment names.

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Ports       []string          `yaml:"ports"`
		Environment map[string]string `yaml:"environment"`
		Healthcheck map[string]any    `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// stackDefaults reads `NAME=${NAME:-value}` defaults from scripts/stack.sh (the
// versions it installs), and adds the ports internal/servers gives the stack.
func stackDefaults(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../../scripts/stack.sh")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	re := regexp.MustCompile(`(?m)^([A-Z_]+)=\$\{[A-Z_]+:-([^}]*)\}`)
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = m[2]
	}
	for name, port := range map[string]int{
		"KAFKA_PORT": servers.StackKafkaPortDefault, "KAFKA_CONTROLLER_PORT": servers.StackKafkaControllerPortDefault,
		"REDIS_PORT": servers.StackRedisPortDefault, "PG_PORT": servers.StackPGPortDefault,
		"SMTP_PORT": servers.StackSMTPPortDefault, "MAILPIT_HTTP_PORT": servers.StackMailpitHTTPPortDefault,
	} {
		out[name] = strconv.Itoa(port)
		// The script's help lists the defaults: it must tell the truth.
		if !strings.Contains(string(raw), name+" "+out[name]) {
			t.Errorf("scripts/stack.sh's help does not say %s %s", name, out[name])
		}
	}
	return out
}

func TestComposeMatchesStackAndCode(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	def := stackDefaults(t)

	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	want := []string{"kafka", "mailpit", "postgres", "producer", "projector", "redis"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}

	images := map[string]string{
		"kafka": testenv.KafkaImage, "redis": testenv.RedisImage,
		"postgres": testenv.PostgresImage, "mailpit": testenv.MailpitImage,
	}
	for svc, img := range images {
		if got := c.Services[svc].Image; got != img {
			t.Errorf("%s image %q, testcontainers starts %q", svc, got, img)
		}
		if c.Services[svc].Healthcheck == nil {
			t.Errorf("%s has no healthcheck", svc)
		}
	}
	if tag := strings.SplitN(testenv.KafkaImage, ":", 2)[1]; tag != def["KAFKA_VERSION"] || tag != servers.KafkaVersionDefault {
		t.Errorf("Kafka image %s but scripts/stack.sh installs %s and internal/servers runs %s", testenv.KafkaImage, def["KAFKA_VERSION"], servers.KafkaVersionDefault)
	}
	if tag := strings.SplitN(testenv.MailpitImage, ":", 2)[1]; tag != def["MAILPIT_VERSION"] {
		t.Errorf("Mailpit image %s but scripts/stack.sh installs %s", testenv.MailpitImage, def["MAILPIT_VERSION"])
	}

	published := map[string][]string{
		"kafka":    {def["KAFKA_PORT"]},
		"redis":    {def["REDIS_PORT"]},
		"postgres": {def["PG_PORT"]},
		"mailpit":  {def["SMTP_PORT"], def["MAILPIT_HTTP_PORT"]},
	}
	for svc, ports := range published {
		var got []string
		for _, p := range c.Services[svc].Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s publishes %q: want 127.0.0.1:HOST:CONTAINER (loopback only)", svc, p)
				continue
			}
			got = append(got, parts[1])
		}
		if !slices.Equal(got, ports) {
			t.Errorf("%s publishes host ports %v, scripts/stack.sh uses %v", svc, got, ports)
		}
	}
	if adv := c.Services["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"]; !strings.Contains(adv, "127.0.0.1:"+def["KAFKA_PORT"]) {
		t.Errorf("kafka advertises %q, not the published 127.0.0.1:%s", adv, def["KAFKA_PORT"])
	}
	// The broker settings every Kafka of the project shares (internal/servers).
	for _, set := range servers.KafkaSettings() {
		name := servers.KafkaContainerVar(set.Key)
		if v := c.Services["kafka"].Environment[name]; v != set.Value {
			t.Errorf("kafka sets %s=%q, internal/servers.KafkaSettings has %s=%s", name, v, set.Key, set.Value)
		}
	}

	known := []string{testenv.EnvKafkaBrokers, testenv.EnvDatabaseURL, testenv.EnvRedisURL, testenv.EnvSMTPAddr, testenv.EnvMailpitURL, shred.MasterKeyEnv}
	// Both services read personal data with the same master key, from one key store.
	pk, rk := c.Services["projector"].Environment[shred.MasterKeyEnv], c.Services["producer"].Environment[shred.MasterKeyEnv]
	if _, err := shred.ParseMasterKey(pk); err != nil || pk != rk {
		t.Errorf("master keys: projector %q, producer %q: want one valid key in both (%v)", pk, rk, err)
	}
	if c.Services["producer"].Environment[testenv.EnvDatabaseURL] != c.Services["projector"].Environment[testenv.EnvDatabaseURL] {
		t.Error("the producer's key store database is not the projector's")
	}
	for _, svc := range []string{"projector", "producer"} {
		s := c.Services[svc]
		if s.Build == nil {
			t.Errorf("%s is not built from the Dockerfile", svc)
		}
		if len(s.Command) == 0 || s.Command[0] != svc {
			t.Errorf("%s runs %v, want the %s binary", svc, s.Command, svc)
		}
		if _, err := os.Stat("../../cmd/" + svc); err != nil {
			t.Errorf("%s: no cmd/%s to build: %v", svc, svc, err)
		}
		src := commandSource(t, svc)
		for k := range s.Environment {
			if !slices.Contains(known, k) && !strings.Contains(src, `"`+k+`"`) {
				t.Errorf("%s sets %s, which cmd/%s (and pkg/service) does not read", svc, k, svc)
			}
		}
	}
	for _, k := range []string{testenv.EnvKafkaBrokers, testenv.EnvDatabaseURL, testenv.EnvRedisURL, testenv.EnvSMTPAddr} {
		if c.Services["projector"].Environment[k] == "" {
			t.Errorf("projector does not set %s", k)
		}
	}
}

// commandSource returns the Go source of cmd/NAME, where its settings' variables are
// named, and of pkg/service for the commands built on it.
func commandSource(t *testing.T, name string) string {
	t.Helper()
	files, err := filepath.Glob("../../cmd/" + name + "/*.go")
	if err != nil {
		t.Fatal(err)
	}
	if name == "projector" {
		lib, err := filepath.Glob("../../pkg/service/*.go")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, lib...)
	}
	var sb strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sb.Write(b)
	}
	return sb.String()
}

func TestStackWritesTheEnvironmentTestsRead(t *testing.T) {
	t.Parallel()
	env := servers.Stack{}.Env(shred.NewMasterKey())
	for _, k := range []string{testenv.EnvKafkaBrokers, testenv.EnvDatabaseURL, testenv.EnvRedisURL, testenv.EnvSMTPAddr, testenv.EnvMailpitURL, shred.MasterKeyEnv} {
		if !strings.Contains(env, "export "+k+"=") {
			t.Errorf("the stack's env file does not set %s:\n%s", k, env)
		}
	}
}
