package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// Defaults for serve.
const (
	listenDefault         = "127.0.0.1:18081"
	maxBodyDefault        = 1 << 20
	publishTimeoutDefault = 10 * time.Second
	shutdownTimeout       = 10 * time.Second
)

// serveUsage is serve's help.
const serveUsage = `producer serve: the HTTP ingest API.

  POST /v1/events   one event or a batch; bearer-token auth
                    Content-Type application/cloudevents+json (one event),
                    application/cloudevents-batch+json (a JSON array), application/json
                    (either), or CloudEvents HTTP binary mode (ce-* headers, data as body)
                    202 with {"results":[{"id","partition","offset"}]}
                    400 naming the field and problem, 401, 413, 415,
                    503 when Kafka cannot take the events (nothing is dropped silently:
                    the body says which events, if any, landed)
  POST /v1/subjects/{id}/forget
                    forget a person (needs --master-key): delete their data keys,
                    publish SubjectForgotten; optional body {"reason": "…"};
                    202 with {"subject","forgotten_at","keys_deleted","event_id",
                    "partition","offset"}
  GET /healthz      the process answers
  GET /readyz       Kafka answers for the topic
  GET /metrics      Prometheus metrics`

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	var c common
	var listen, tokens, tokensFile string
	var anonymous bool
	var maxBody int
	var timeout time.Duration
	f := cli.NewFlags("serve", serveUsage)
	c.register(f)
	f.String(&listen, "listen", "PRODUCER_LISTEN", listenDefault, "HTTP listen address")
	f.String(&tokens, "tokens", "PRODUCER_TOKENS", "", "accepted bearer tokens, comma-separated")
	f.String(&tokensFile, "tokens-file", "PRODUCER_TOKENS_FILE", "", "file of accepted bearer tokens, one a line")
	f.Bool(&anonymous, "allow-anonymous", "PRODUCER_ALLOW_ANONYMOUS", false, "accept requests without a token (a local stack only)")
	f.Int(&maxBody, "max-body", "PRODUCER_MAX_BODY", maxBodyDefault, "largest request body in bytes")
	f.Duration(&timeout, "publish-timeout", "PRODUCER_PUBLISH_TIMEOUT", publishTimeoutDefault, "how long a request waits for Kafka before 503")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	toks := cli.SplitList(tokens)
	if tokensFile != "" {
		more, err := readTokens(tokensFile)
		if err != nil {
			return fmt.Errorf("--tokens-file (PRODUCER_TOKENS_FILE): %w", err)
		}
		toks = append(toks, more...)
	}
	if len(toks) == 0 && !anonymous {
		return errors.New("no tokens: set --tokens (PRODUCER_TOKENS) or --tokens-file, or --allow-anonymous for a local stack")
	}
	if maxBody < 1 || timeout <= 0 {
		return fmt.Errorf("--max-body %d and --publish-timeout %v must be positive", maxBody, timeout)
	}
	pub, log, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	// One client for the readiness probe, for the life of the server.
	brokers := cli.SplitList(c.brokers)
	kc := eventlog.NewClient(brokers)
	defer kc.Close()
	var forget func(ctx context.Context, subject, reason string) (forgetResult, error)
	if pub.keys != nil {
		forget = func(ctx context.Context, subject, reason string) (forgetResult, error) {
			return forgetSubject(ctx, pub.keys, pub.kafka, c.source, subject, reason)
		}
	}
	h := newIngest(ingestConfig{
		Forget: forget,
		Tokens: toks, MaxBody: int64(maxBody), PublishTimeout: timeout, Logger: log,
		Ready: func(ctx context.Context) error {
			if _, err := kc.Partitions(ctx, c.topic); err != nil {
				return kafkaErr(brokers, err)
			}
			return nil
		},
	}, pub)

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen (PRODUCER_LISTEN) %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	log.Info("serving the ingest API", zap.String("addr", ln.Addr().String()), zap.String("topic", c.topic),
		zap.Int("tokens", len(toks)), zap.Bool("anonymous", len(toks) == 0))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx) //nolint:contextcheck // the request context has ended; shutdown gets its own bounded one
	if serr := <-errc; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if t := strings.TrimSpace(s.Text()); t != "" && !strings.HasPrefix(t, "#") {
			out = append(out, t)
		}
	}
	return out, s.Err()
}

// publisher is what the ingest API needs of eventlog.Publisher.
type publisher interface {
	Publish(ctx context.Context, evs ...events.Event) ([]eventlog.Result, error)
}

type ingestConfig struct {
	Tokens         []string                        // accepted bearer tokens; none = anonymous
	MaxBody        int64                           // largest body in bytes
	PublishTimeout time.Duration                   // bound on one publish
	Ready          func(ctx context.Context) error // readiness probe of Kafka
	Logger         *zap.Logger
	// Forget forgets a subject; nil when the key store is not configured.
	Forget func(ctx context.Context, subject, reason string) (forgetResult, error)
}

type ingest struct {
	cfg     ingestConfig
	tokens  [][]byte
	pub     publisher
	mux     *http.ServeMux
	reg     *prometheus.Registry
	reqs    *prometheus.CounterVec
	evs     *prometheus.CounterVec
	latency prometheus.Histogram
}

func newIngest(cfg ingestConfig, pub publisher) *ingest {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	h := &ingest{cfg: cfg, pub: pub, mux: http.NewServeMux(), reg: prometheus.NewRegistry()}
	for _, t := range cfg.Tokens {
		h.tokens = append(h.tokens, []byte(t))
	}
	h.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "producer_http_requests_total", Help: "Ingest API requests by status code."}, []string{"code"})
	h.evs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "producer_events_total", Help: "Events by outcome: published, rejected, failed."}, []string{"outcome"})
	h.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "producer_publish_seconds", Help: "Time from request to Kafka acknowledgement.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	h.reg.MustRegister(h.reqs, h.evs, h.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h.mux.HandleFunc("POST /v1/events", h.postEvents)
	h.mux.HandleFunc("POST /v1/subjects/{id}/forget", h.postForget)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	return h
}

func (h *ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	h.mux.ServeHTTP(rec, r)
	h.reqs.WithLabelValues(fmt.Sprint(rec.code)).Inc()
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) { s.code = code; s.ResponseWriter.WriteHeader(code) }

func (h *ingest) readyz(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := h.cfg.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "problem": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// apiError is the body of every 4xx and 5xx answer.
type apiError struct {
	Field   string `json:"field,omitempty"`
	Problem string `json:"problem"`
	Index   *int   `json:"index,omitempty"` // the event's position in a batch
}

type result struct {
	ID        string `json:"id"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Error     string `json:"error,omitempty"`
}

func (h *ingest) authorized(r *http.Request) bool {
	if len(h.tokens) == 0 {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	match := 0
	for _, t := range h.tokens { // every token compared, in constant time each
		match |= subtle.ConstantTimeCompare([]byte(got), t)
	}
	return match == 1
}

func (h *ingest) postEvents(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="projector"`)
		writeJSON(w, http.StatusUnauthorized, map[string]apiError{"error": {Problem: "missing or unknown bearer token"}})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]apiError{"error": {Problem: fmt.Sprintf("body larger than %d bytes", tooBig.Limit)}})
			return
		}
		writeJSON(w, http.StatusBadRequest, map[string]apiError{"error": {Problem: "reading body: " + err.Error()}})
		return
	}
	evs, status, apiErr := parseRequest(r, body)
	if apiErr != nil {
		h.evs.WithLabelValues("rejected").Inc()
		writeJSON(w, status, map[string]*apiError{"error": apiErr})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	res, err := h.pub.Publish(ctx, evs...)
	h.latency.Observe(time.Since(start).Seconds())
	if errors.Is(err, errPlaintext) || errors.Is(err, shred.ErrSubjectForgotten) || isValidation(err) {
		// Refused before anything was published: the client's events are wrong.
		h.evs.WithLabelValues("rejected").Add(float64(len(evs)))
		code := http.StatusBadRequest
		if errors.Is(err, shred.ErrSubjectForgotten) {
			code = http.StatusConflict
		}
		writeJSON(w, code, map[string]apiError{"error": {Problem: err.Error()}})
		return
	}
	out := make([]result, len(evs))
	published := 0
	for i, e := range evs {
		out[i] = result{ID: e.ID, Partition: -1, Offset: -1}
		if i < len(res) {
			out[i].Partition, out[i].Offset = res[i].Partition, res[i].Offset
			if res[i].Err != nil {
				out[i].Partition, out[i].Error = -1, res[i].Err.Error()
			} else {
				published++
			}
		} else if err != nil {
			out[i].Error = err.Error()
		}
	}
	h.evs.WithLabelValues("published").Add(float64(published))
	h.evs.WithLabelValues("failed").Add(float64(len(evs) - published))
	if err != nil {
		h.cfg.Logger.Warn("publish failed", zap.Int("events", len(evs)), zap.Int("published", published), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"error":   apiError{Problem: fmt.Sprintf("kafka did not take the events (%d of %d acknowledged): %v", published, len(evs), err)},
			"results": out,
		})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"results": out})
}

func isValidation(err error) bool {
	var ve *events.ValidationError
	return errors.As(err, &ve)
}

// postForget forgets a subject: POST /v1/subjects/{id}/forget.
func (h *ingest) postForget(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="projector"`)
		writeJSON(w, http.StatusUnauthorized, map[string]apiError{"error": {Problem: "missing or unknown bearer token"}})
		return
	}
	if len(h.tokens) == 0 {
		writeJSON(w, http.StatusForbidden, map[string]apiError{"error": {Problem: "forgetting is irreversible: it needs a bearer token, and this server runs with --allow-anonymous"}})
		return
	}
	if h.cfg.Forget == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]apiError{"error": {Problem: "forgetting needs the personal-data key store: start serve with --master-key (" + shred.MasterKeyEnv + ")"}})
		return
	}
	subject := r.PathValue("id")
	if err := checkSubject(subject); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]apiError{"error": {Field: "id", Problem: err.Error()}})
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil && len(bytes.TrimSpace(b)) > 0 {
		if err = events.CheckJSON(b); err == nil {
			err = json.Unmarshal(b, &body)
		}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]apiError{"error": {Problem: "body: want {\"reason\": \"…\"}: " + err.Error()}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	res, err := h.cfg.Forget(ctx, subject, body.Reason)
	if err != nil {
		h.cfg.Logger.Warn("forget failed", zap.String("subject", subject), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]apiError{"error": {Problem: "forget " + subject + ": " + err.Error()}})
		return
	}
	h.cfg.Logger.Info("forgot a subject", zap.String("subject", subject), zap.Int("keys_deleted", res.KeysDeleted), zap.Int64("offset", res.Offset))
	writeJSON(w, http.StatusAccepted, res)
}

// parseRequest reads one event or a batch, by content type.
func parseRequest(r *http.Request, body []byte) ([]events.Event, int, *apiError) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if r.Header.Get("Ce-Id") != "" || r.Header.Get("Ce-Specversion") != "" {
		return parseBinaryMode(r, body)
	}
	switch mt {
	case events.ContentTypeBatch:
		return parseBatch(body)
	case events.ContentTypeStructured:
		return parseOne(body)
	case "application/json", "":
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
			return parseBatch(body)
		}
		return parseOne(body)
	}
	return nil, http.StatusUnsupportedMediaType, &apiError{Field: "Content-Type",
		Problem: fmt.Sprintf("%q: want %s, %s, application/json, or ce-* headers", ct, events.ContentTypeStructured, events.ContentTypeBatch)}
}

func parseOne(body []byte) ([]events.Event, int, *apiError) {
	e, err := events.ParseStructured(body)
	if err != nil {
		return nil, http.StatusBadRequest, toAPIError(err, nil)
	}
	return []events.Event{e}, 0, nil
}

func parseBatch(body []byte) ([]events.Event, int, *apiError) {
	if err := events.CheckJSON(body); err != nil {
		return nil, http.StatusBadRequest, toAPIError(&events.ValidationError{Field: "batch", Err: err}, nil)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, http.StatusBadRequest, &apiError{Field: "batch", Problem: "want a JSON array of events: " + err.Error()}
	}
	if len(raw) == 0 {
		return nil, http.StatusBadRequest, &apiError{Field: "batch", Problem: "empty batch"}
	}
	out := make([]events.Event, len(raw))
	for i, m := range raw {
		e, err := events.ParseStructured(m)
		if err != nil {
			return nil, http.StatusBadRequest, toAPIError(err, &i)
		}
		out[i] = e
	}
	return out, 0, nil
}

// parseBinaryMode reads CloudEvents' HTTP binary mode: attributes in ce-* headers,
// the data as the body, its media type in Content-Type.
func parseBinaryMode(r *http.Request, body []byte) ([]events.Event, int, *apiError) {
	rec := events.Record{Value: body}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lk, "ce-"):
			rec.Headers = append(rec.Headers, events.Header{Key: "ce_" + lk[3:], Value: []byte(vs[0])})
		case lk == "content-type":
			rec.Headers = append(rec.Headers, events.Header{Key: events.HeaderContentType, Value: []byte(vs[0])})
		}
	}
	e, err := events.Decode(rec)
	if err != nil {
		return nil, http.StatusBadRequest, toAPIError(err, nil)
	}
	return []events.Event{e}, 0, nil
}

func toAPIError(err error, index *int) *apiError {
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return &apiError{Field: ve.Field, Problem: ve.Err.Error(), Index: index}
	}
	return &apiError{Problem: err.Error(), Index: index}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
