package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// GET /api/v1/tickets/{id}/attempts of a ticket never submitted answers
// 404 unknown ticket, as every ticket endpoint does (README, HTTP), and as
// `status --attempts` exits 4: not 200 {"attempts": []}, which reads as a
// ticket with no failed attempt. A known ticket without one still gets 200
// and an empty list.
func TestHTTPAttemptsOfUnknownTicketIs404(t *testing.T) {
	ep, addr := harness.FreeEndpoint(t), harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--http-listen", addr)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	const unknown = "0123456789abcdef0123456789abcdef"
	for _, path := range []string{"/api/v1/tickets/" + unknown, "/api/v1/tickets/" + unknown + "/attempts"} {
		if code, body := get(path); code != http.StatusNotFound || !strings.Contains(body, "unknown ticket") {
			t.Errorf("GET %s (never submitted): %d %s; want 404 unknown ticket", path, code, body)
		}
	}
	if _, code := cli(t, "", "status", "--attempts", "--broker", ep, unknown); code != 4 {
		t.Errorf("status --attempts of an unknown ticket: exit %d, want 4", code)
	}
	out, code := cli(t, "", "submit", "--broker", ep, "nobody", "x")
	if code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	known := strings.TrimSpace(out)
	if code, body := get("/api/v1/tickets/" + known + "/attempts"); code != http.StatusOK || !strings.Contains(body, `"attempts":[]`) {
		t.Errorf("GET attempts of a pending ticket with none: %d %s; want 200 and an empty list", code, body)
	}
}
