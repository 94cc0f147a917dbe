package service

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

type parcelSent struct {
	ParcelID string `json:"parcel_id"`
}

// parcels is a service of the test's own: a projection, an effect and a route.
func parcels() Config {
	reg := events.NewRegistry()
	events.Register[parcelSent](reg, "ParcelSent")
	return Config{
		Name: "parcels", About: "parcels sent", Topic: "parcels.events", Projection: "parcels",
		NewProjection: func(name string, version int) (*readmodel.Projection, error) {
			return readmodel.New(name, version, reg)
		},
		Effects: []Effect{{Name: "parcel_mail", Help: "a mail per parcel", New: func(reg *events.Registry, _ Deps) (*sideeffects.Effect, error) {
			return sideeffects.Define("parcel_mail", reg)
		}}},
		Routes: func(mux *http.ServeMux, rm ReadModel) {
			mux.HandleFunc("GET /v1/parcels", func(w http.ResponseWriter, _ *http.Request) {
				WriteJSON(w, http.StatusOK, map[string]string{"schema": rm.Schema()})
			})
		},
		RoutesHelp: []string{"GET /v1/parcels   the parcels"},
	}
}

// The commands' defaults are the service's own: its name, topic, projection and
// effects, not the example's.
func TestDefaultsComeFromTheConfig(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string][]string{
		"run":    {"parcels run: build the read model from the log", "The read model: parcels sent.", `--topic string`, "(default parcels.events)", "(default parcels)", "(default parcel_mail)", "GET /v1/parcels", "parcel_mail", "a mail per parcel"},
		"status": {"parcels status:", "(default parcels.events)", "(default parcel_mail)"},
		"dlq":    {"parcels dlq list", "(default parcels)"},
	} {
		var out bytes.Buffer
		err := Run(context.Background(), parcels(), []string{cmd, "--help"}, &out, &out)
		if err != nil && !errors.Is(err, cli.ErrHelp) {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, w := range want {
			require.Contains(t, out.String(), w, "%s --help", cmd)
		}
		require.NotContains(t, out.String(), "users", "%s --help", cmd)
	}
	var out bytes.Buffer
	require.NoError(t, Run(context.Background(), parcels(), []string{"--help"}, &out, &out))
	require.Contains(t, out.String(), "Usage: parcels COMMAND")
	err := Run(context.Background(), parcels(), []string{"frobnicate"}, &out, &out)
	require.ErrorContains(t, err, "see parcels --help")
	require.Equal(t, 2, exitStatus("parcels", err, &out))
	require.Equal(t, 2, exitStatus("parcels", Run(context.Background(), parcels(), nil, &out, &out), &out))
}

func TestAnIncompleteConfigIsRefusedByField(t *testing.T) {
	t.Parallel()
	for field, edit := range map[string]func(*Config){
		"Config.Topic":         func(c *Config) { c.Topic = "" },
		"Config.Projection":    func(c *Config) { c.Projection = "" },
		"Config.NewProjection": func(c *Config) { c.NewProjection = nil },
		"Config.Effects[0]":    func(c *Config) { c.Effects[0].New = nil },
	} {
		cfg := parcels()
		edit(&cfg)
		err := Run(context.Background(), cfg, []string{"status"}, &bytes.Buffer{}, &bytes.Buffer{})
		require.ErrorContains(t, err, field)
	}
	cfg := parcels()
	cfg.Effects[0].Name = "other"
	_, err := mustService(t, cfg).buildEffects([]string{"other"}, mustProjection(t, cfg), Deps{})
	require.ErrorContains(t, err, `defined an effect named "parcel_mail"`)
	_, err = mustService(t, cfg).buildEffects([]string{"nope"}, mustProjection(t, cfg), Deps{})
	require.ErrorContains(t, err, `unknown effect "nope" (known: other, or none)`)
}

// The service's own routes are served beside the framework's.
func TestTheServicesRoutesAreMounted(t *testing.T) {
	t.Parallel()
	cfg := parcels()
	h := mustService(t, cfg).newAPI(nil, nil, mustProjection(t, cfg), prometheus.NewRegistry(), admin.Inspection{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/parcels", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, `{"schema":"\"parcels_v1\""}`, strings.TrimSpace(rec.Body.String()))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
}

func mustService(t *testing.T, cfg Config) *service {
	t.Helper()
	s, err := newService(cfg)
	require.NoError(t, err)
	return s
}

func mustProjection(t *testing.T, cfg Config) *readmodel.Projection {
	t.Helper()
	p, err := cfg.NewProjection(cfg.Projection, 1)
	require.NoError(t, err)
	return p
}
