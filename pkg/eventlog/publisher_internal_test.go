package eventlog

import (
	"context"
	"testing"
	"time"

	"github.com/projector/projector/pkg/events"
)

// A call that its context ended may leave its events in its writer, to be sent
// later; the calls after it go through the same writer, behind them, whatever
// their size, until that writer can no longer send them.
func TestCallsFollowAWriterThatMayStillSendAnEndedCallsEvents(t *testing.T) {
	p, err := NewPublisher(PublisherConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "nowhere", MaxAttempts: 1, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if p.writer(1) != p.few || p.writer(fewEvents) != p.few || p.writer(fewEvents+1) != p.bulk {
		t.Fatal("calls of a few events go to the small-batch writer, larger ones to the bulk writer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ev := events.Event{ID: "e1", Source: "test", Type: "UserRegistered", Subject: "user-1", Time: time.Now(),
		DataContentType: "application/json", Data: []byte(`{}`)}
	if _, err := p.Publish(ctx, ev); err == nil {
		t.Fatal("a call whose context had ended succeeded")
	}
	if p.writer(fewEvents+1) != p.few {
		t.Fatal("a bulk call right after a single-event call ended by its context did not follow it through its writer")
	}
	if want := time.Second + time.Second + BatchTimeoutDefault; p.holdFor != want {
		t.Fatalf("holdFor %v, want %v (one attempt of the write timeout and a backoff, and the batch timeout)", p.holdFor, want)
	}
	p.mu.Lock()
	p.heldUntil = time.Now().Add(-time.Millisecond)
	p.mu.Unlock()
	if p.writer(fewEvents+1) != p.bulk {
		t.Fatal("once the held writer can no longer send the ended call's events, a bulk call goes to the bulk writer")
	}
}
