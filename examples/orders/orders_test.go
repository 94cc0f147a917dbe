package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/sideeffects"
)

// binary is the example built as a user builds it, for the tests to run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orders-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "orders")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build examples/orders: %v\n%s", err, out)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// The built example, run against the stack, folds the log into a read model equal to
// an independent fold of the events, mails each shipped order's customer exactly
// once, at the address the read model holds, and answers its own route.
func TestOrdersServiceEqualsTheFoldAndMailsOncePerShippedOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the stack: run without -short")
	}
	t.Parallel()
	w := newWorld(t)
	evs := w.workload(60)
	w.publish(evs)
	want := fold(t, evs)
	t.Logf("%d events: %d customers, %d orders, %d shipped", len(evs), len(want.customers), len(want.orders), want.shipped())

	addr := testenv.FreeAddr(t)
	cmd, out := w.start("run", "--listen", addr, "--progress=false", "--log-level", "warn")
	testenv.WaitFor(t, 2*time.Minute, "the read model at the log end and every shipped order mailed", func() bool {
		st := w.status(t)
		return st.Ready && st.Lag == 0 && len(st.StoredEffects) == 1 && st.StoredEffects[0].Lag == 0 && len(w.mails(t)) >= want.shipped()
	})
	var o Order
	code := getJSON(t, "http://"+addr+"/v1/orders/"+want.firstShipped, &o)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, want.firstShipped, o.OrderID)
	require.NotNil(t, o.ShippedAt)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "orders run did not stop cleanly:\n%s", out.String())

	got := w.load(t)
	got.firstShipped = want.firstShipped
	require.Equal(t, want, got, "the read model differs from the fold of the events")
	w.assertOneMailPerShippedOrder(t, want)

	// The operator's commands work on the service's own projection.
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "list"}, "no parked events"},
		{[]string{"versions", "list"}, w.projection + "_v1"},
		{[]string{"snapshot", "create", "--snapshot-dir", dir}, "snapshot "},
		{[]string{"snapshot", "list", "--snapshot-dir", dir}, fmt.Sprint(len(evs))},
		{[]string{"migrate", "status"}, "0001"},
	} {
		out, err := exec.Command(binary, append(c.args, w.flags()...)...).CombinedOutput()
		require.NoError(t, err, "orders %v:\n%s", c.args, out)
		require.Contains(t, string(out), c.want, "orders %v", c.args)
	}
}

// world is one test's topic, schemas, ledger namespace and mail domain.
type world struct {
	t          *testing.T
	topic      string
	pool       *pgxpool.Pool
	schema     string // the framework's tables
	projection string
	prefix     string // customer ids, the ledger namespace, the mail domain
	mail       testenv.Mailpit
	msgIDs     map[string]string // Message-ID -> order id, for every shipped order
	emails     map[string]string // order id -> the customer's email
}

func newWorld(t *testing.T) *world {
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "o" + hex.EncodeToString(b[:])
	pool, schema := testenv.Postgres(t)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{prefix + "_v1"}.Sanitize()+" CASCADE")
	})
	return &world{t: t, topic: testenv.Topic(t, 3), pool: pool, schema: schema, projection: prefix, prefix: prefix,
		mail: testenv.MailpitServer(t), msgIDs: map[string]string{}, emails: map[string]string{}}
}

// start runs the built example with the world's settings.
func (w *world) start(args ...string) (*exec.Cmd, *testenv.SyncBuffer) {
	var out testenv.SyncBuffer
	args = append(args, "--redis-url", testenv.Get(w.t).RedisURL, "--smtp-addr", w.mail.SMTPAddr, "--ledger-namespace", w.prefix)
	cmd := exec.Command(binary, append(args, w.flags()...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(w.t, cmd.Start())
	w.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out
}

// flags are the settings every command takes: where the log and the read model are.
func (w *world) flags() []string {
	s := testenv.Get(w.t)
	return []string{"--brokers", strings.Join(s.KafkaBrokers, ","), "--database-url", s.DatabaseURL,
		"--topic", w.topic, "--projection", w.projection, "--schema", w.schema}
}

// status is 'orders status --json'.
func (w *world) status(t *testing.T) projector.Status {
	cmd := exec.Command(binary, append([]string{"status", "--json", "--interval", "0"}, w.flags()...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	var st projector.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Logf("status --json: %v\n%s", err, stderr.String())
	}
	return st
}

// workload is a deterministic history of n customers who register, move, place
// orders and have them shipped, each customer's events in order.
func (w *world) workload(n int) []events.Event {
	rng := mrand.New(mrand.NewPCG(7, 11))
	start := time.Now().UTC().Truncate(time.Millisecond)
	var evs []events.Event
	seq := map[string]uint64{}
	add := func(subject, typ string, v any) {
		raw, err := json.Marshal(v)
		require.NoError(w.t, err)
		seq[subject]++
		evs = append(evs, events.Event{ID: events.NewID(), Source: "orders-test", Type: typ, Subject: subject,
			Time: start.Add(time.Duration(len(evs)) * time.Millisecond), DataContentType: events.ContentTypeJSON,
			Data: raw, Sequence: seq[subject], SchemaVersion: 1})
	}
	open := map[string][]string{}
	for i := range n {
		c := fmt.Sprintf("%s-c%03d", w.prefix, i)
		add(c, TypeCustomerRegistered, CustomerRegistered{CustomerID: c, Name: fmt.Sprintf("Customer %d", i),
			Email: fmt.Sprintf("c%03d@%s.example.test", i, w.prefix), Address: fmt.Sprintf("%d First Street", i)})
	}
	for k := range 8 * n {
		c := fmt.Sprintf("%s-c%03d", w.prefix, rng.IntN(n))
		switch r := rng.Float64(); {
		case r < 0.1:
			add(c, TypeCustomerMoved, CustomerMoved{CustomerID: c, Address: fmt.Sprintf("%d Second Avenue", k)})
		case r < 0.6 || len(open[c]) == 0:
			id := fmt.Sprintf("%s-o%04d", c, k)
			open[c] = append(open[c], id)
			add(c, TypeOrderPlaced, OrderPlaced{CustomerID: c, OrderID: id, Item: fmt.Sprintf("item %d", k%17), Cents: int64(100 + k)})
		default:
			id := open[c][0]
			open[c] = open[c][1:]
			add(c, TypeOrderShipped, OrderShipped{CustomerID: c, OrderID: id, Carrier: "Parcel Co"})
		}
	}
	return evs
}

func (w *world) publish(evs []events.Event) {
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(w.t), Topic: w.topic})
	require.NoError(w.t, err)
	defer func() { _ = pub.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = pub.Publish(ctx, evs...)
	require.NoError(w.t, err)
	for _, e := range evs {
		if e.Type == TypeOrderShipped {
			var v OrderShipped
			require.NoError(w.t, json.Unmarshal(e.Data, &v))
			w.msgIDs[sideeffects.MessageID(sideeffects.Key(ShippedMailEffect, e.ID))] = v.OrderID
		}
	}
}

func (w *world) mails(t *testing.T) []testenv.Message {
	return w.mail.Messages(t, "@"+w.prefix+".example.test")
}

// assertOneMailPerShippedOrder checks each shipped order got one mail, with the
// Message-ID its run's key gives, sent to the customer's email read from the read model.
func (w *world) assertOneMailPerShippedOrder(t *testing.T, want state) {
	seen := map[string]int{}
	for _, m := range w.mails(t) {
		order, ok := w.msgIDs[m.MessageID]
		require.True(t, ok, "a mail with Message-ID %q matches no shipped order", m.MessageID)
		seen[order]++
		require.Len(t, m.To, 1)
		require.Equal(t, want.customers[want.orders[order].CustomerID].Email, m.To[0].Address, "order %s", order)
	}
	require.Len(t, seen, want.shipped(), "shipped orders mailed")
	for order, n := range seen {
		require.Equal(t, 1, n, "mails for order %s", order)
	}
}

// state is the read model's content: what the fold of the events says, or what the
// database holds.
type state struct {
	customers    map[string]CustomerRegistered // with the address as of the last move
	counts       map[string]int                // orders per customer
	orders       map[string]OrderPlaced
	shippedBy    map[string]string // order id -> carrier, for shipped orders
	firstShipped string            // the first order shipped, not a column
}

func (s state) shipped() int { return len(s.shippedBy) }

// fold applies the events in Go, independently of the projection's SQL.
func fold(t *testing.T, evs []events.Event) state {
	s := state{customers: map[string]CustomerRegistered{}, counts: map[string]int{}, orders: map[string]OrderPlaced{}, shippedBy: map[string]string{}}
	for _, e := range evs {
		switch e.Type {
		case TypeCustomerRegistered:
			var v CustomerRegistered
			require.NoError(t, json.Unmarshal(e.Data, &v))
			s.customers[v.CustomerID], s.counts[v.CustomerID] = v, 0
		case TypeCustomerMoved:
			var v CustomerMoved
			require.NoError(t, json.Unmarshal(e.Data, &v))
			c := s.customers[v.CustomerID]
			c.Address = v.Address
			s.customers[v.CustomerID] = c
		case TypeOrderPlaced:
			var v OrderPlaced
			require.NoError(t, json.Unmarshal(e.Data, &v))
			s.orders[v.OrderID] = v
			s.counts[v.CustomerID]++
		case TypeOrderShipped:
			var v OrderShipped
			require.NoError(t, json.Unmarshal(e.Data, &v))
			s.shippedBy[v.OrderID] = v.Carrier
			if s.firstShipped == "" {
				s.firstShipped = v.OrderID
			}
		}
	}
	return s
}

// load reads the read model's tables into a state.
func (w *world) load(t *testing.T) state {
	ctx := context.Background()
	rm := pgx.Identifier{w.projection + "_v1"}.Sanitize()
	s := state{customers: map[string]CustomerRegistered{}, counts: map[string]int{}, orders: map[string]OrderPlaced{}, shippedBy: map[string]string{}}
	rows, err := w.pool.Query(ctx, "SELECT customer_id, name, email, address, orders FROM "+rm+".customers")
	require.NoError(t, err)
	for rows.Next() {
		var c CustomerRegistered
		var n int
		require.NoError(t, rows.Scan(&c.CustomerID, &c.Name, &c.Email, &c.Address, &n))
		s.customers[c.CustomerID], s.counts[c.CustomerID] = c, n
	}
	require.NoError(t, rows.Err())
	rows, err = w.pool.Query(ctx, "SELECT order_id, customer_id, item, cents, carrier FROM "+rm+".orders")
	require.NoError(t, err)
	for rows.Next() {
		var o OrderPlaced
		var carrier *string
		require.NoError(t, rows.Scan(&o.OrderID, &o.CustomerID, &o.Item, &o.Cents, &carrier))
		s.orders[o.OrderID] = o
		if carrier != nil {
			s.shippedBy[o.OrderID] = *carrier
		}
	}
	require.NoError(t, rows.Err())
	return s
}

func getJSON(t *testing.T, url string, v any) int {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	return resp.StatusCode
}
