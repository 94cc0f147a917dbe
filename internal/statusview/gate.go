package statusview

import (
	"net/http"
	"sync"
)

// Gate is what a service serves while it starts: until it is opened, every request,
// /healthz included, gets 503 and what start waits for; then the API answers.
type Gate struct {
	mu      sync.Mutex
	waiting string       // what start waits for, and the last error
	api     http.Handler // set once the runner exists
}

// NewGate returns a closed gate, waiting for "starting".
func NewGate() *Gate { return &Gate{waiting: "starting"} }

// ServeHTTP hands requests to the API once the gate is open; before, it answers 503
// with what start waits for.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	api, waiting := g.api, g.waiting
	g.mu.Unlock()
	if api != nil {
		api.ServeHTTP(w, r)
		return
	}
	WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "waiting": waiting})
}

// Open hands HTTP over to the API.
func (g *Gate) Open(api http.Handler) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.api, g.waiting = api, ""
}

// Wait says what start waits for now ("" once it has it).
func (g *Gate) Wait(why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting = why
}
