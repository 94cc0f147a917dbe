// Package statusview shows a projection's status: the HTTP API a running service
// serves (the status page, /healthz, /readyz, /status, /status/stored, /metrics,
// and a 503 gate while it starts), the text report of its status command, and the
// progress bar of a catch-up.
package statusview

import (
	"context"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/projector"
)

type api struct {
	runner *projector.Runner
	mux    *http.ServeMux
	stored storedStatus
}

// NewAPI serves the runner's status, its metrics and the service's own routes
// (mounted by routes, when not nil). stored asks where the projection stands in
// PostgreSQL and Kafka, for every instance.
func NewAPI(r *projector.Runner, reg *prometheus.Registry, stored admin.Inspection, routes func(mux *http.ServeMux)) http.Handler {
	a := &api{runner: r, mux: http.NewServeMux(), stored: storedStatus{in: stored}}
	a.mux.HandleFunc("GET /{$}", a.page)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, 200, r.Status()) })
	a.mux.HandleFunc("GET /status/stored", a.storedStatus)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if routes != nil {
		routes(a.mux)
	}
	return a.mux
}

// healthz answers 200 once the runner reached Kafka at start, and 503 with what it
// waits for until then (PostgreSQL is reached before the API serves).
func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	if why := a.runner.Status().Waiting; why != "" {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "waiting", "waiting": why})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// storedStatus is where the projection stands as stored — every instance's
// positions, consumed totals, the effects' watermarks and parked runs — asked of
// PostgreSQL and Kafka at most every storedMaxAge, whatever the page's refresh rate.
type storedStatus struct {
	in admin.Inspection

	mu  sync.Mutex
	at  time.Time
	st  projector.Status
	err error
}

const storedMaxAge = 2 * time.Second

func (s *storedStatus) get(ctx context.Context) (projector.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) >= storedMaxAge {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.st, s.err = admin.Inspect(ictx, s.in)
		cancel()
		s.at = time.Now()
	}
	return s.st, s.err
}

func (a *api) storedStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.stored.get(r.Context())
	if err != nil {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, st)
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	st := a.runner.Status()
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": st.Ready, "joined": st.Joined, "lag": st.Lag, "partitions": len(st.Partitions),
		"ready_lag": st.ReadyLag, "ready_rule": st.ReadyRule}
	if st.Waiting != "" {
		body["waiting"] = st.Waiting
	}
	WriteJSON(w, code, body)
}

//go:embed web/status.html
var statusPage string

var statusTemplate = template.Must(template.New("status").Parse(statusPage))

// page renders the status page: this instance's status, and the stored one (every
// instance's positions and consumed totals, the effects); its script refreshes both
// from /status and /status/stored every second.
func (a *api) page(w http.ResponseWriter, r *http.Request) {
	st := a.runner.Status()
	js, err := json.Marshal(st)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var stored any
	if s, err := a.stored.get(r.Context()); err != nil {
		stored = map[string]string{"error": err.Error()}
	} else {
		stored = s
	}
	sjs, err := json.Marshal(stored)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusTemplate.Execute(w, struct {
		projector.Status
		JSON, StoredJSON template.JS
	}{st, template.JS(js), template.JS(sjs)}) //nolint:gosec // JSON from our own status, not user input
}

// WriteJSON answers with status code and v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
