package statusview

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"go.uber.org/zap"
)

// Serve's goroutine is gone once stop returns (goleak checks it in TestMain).
func TestServeStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := Serve(context.Background(), ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), zap.NewNop())
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String())
	if err != nil {
		stop()
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	stop()
	if string(b) != "ok" {
		t.Fatalf("body %q, want ok", b)
	}
}
