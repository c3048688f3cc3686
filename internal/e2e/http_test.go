package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestHTTPAPI: the broker's HTTP listener serves health, Prometheus
// metrics, the JSON API and the dashboard, with the bearer token when one
// is set.
func TestHTTPAPI(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	addr := harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--http-listen", addr, "--http-token", "s3cret"}, fastBroker...)...)
	cl := newClient(t, ep)
	tk, err := cl.Submit(context.Background(), "svc", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, token bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if token {
			req.Header.Set("Authorization", "Bearer s3cret")
		}
		c := &http.Client{Timeout: 5 * time.Second}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/healthz", false); code != 200 || !strings.Contains(body, "active") {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, _ := get("/metrics", false); code != 401 {
		t.Fatalf("metrics without token: %d, want 401", code)
	}
	if code, body := get("/metrics", true); code != 200 || !strings.Contains(body, "titanic_submits_total 1") || !strings.Contains(body, `titanic_queue_depth{service="svc"} 1`) {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	code, body := get("/api/v1/tickets/"+tk, true)
	var ticket map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &ticket) != nil || !strings.Contains(body, tk) {
		t.Fatalf("ticket: %d %s", code, body)
	}
	if code, body := get("/", false); code != 200 || !strings.Contains(strings.ToLower(body), "<html") {
		t.Fatalf("dashboard: %d", code)
	}
}
