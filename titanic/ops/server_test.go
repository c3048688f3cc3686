package ops_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/ops"
)

func TestAuth(t *testing.T) {
	const token = "s3cret-token"
	fx := newFixture(t, func(c *ops.Config) { c.Token = token })
	protected := []string{"/metrics", "/api/v1/tickets", "/api/v1/tickets/" + fx.done.String(), "/api/v1/services",
		"/api/v1/workers", "/api/v1/clients", "/api/v1/cluster", "/api/v1/stats", "/api/v1/nothing"}
	for _, p := range protected {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
			rec := fx.do(t, http.MethodGet, p, "Authorization", auth, "Host", "ops.example.com")
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("GET %s with %q: %d, want 401", p, auth, rec.Code)
			}
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") || !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("GET %s: 401 without challenge or JSON error: %v %s", p, rec.Header(), rec.Body)
			}
		}
		// With a token, any Host is fine (the listener is meant to be exposed).
		rec := fx.do(t, http.MethodGet, p, "Authorization", "Bearer "+token, "Host", "ops.example.com")
		if want := http.StatusOK; p == "/api/v1/nothing" {
			if rec.Code != http.StatusNotFound {
				t.Fatalf("GET %s with token: %d, want 404", p, rec.Code)
			}
		} else if rec.Code != want {
			t.Fatalf("GET %s with token: %d, want %d: %s", p, rec.Code, want, rec.Body)
		}
	}
	if rec := fx.do(t, http.MethodDelete, "/api/v1/tickets/"+fx.done.String()); rec.Code != http.StatusUnauthorized {
		t.Fatalf("DELETE without token: %d", rec.Code)
	}
	if len(fx.tickets.closed) != 0 {
		t.Fatal("closed without a token")
	}
	if rec := fx.do(t, http.MethodDelete, "/api/v1/tickets/"+fx.done.String(), "Authorization", "bearer "+token); rec.Code != http.StatusOK {
		t.Fatalf("DELETE with token (lower-case scheme): %d %s", rec.Code, rec.Body)
	}
	// Health and the dashboard's static files need no token.
	for _, p := range []string{"/healthz", "/", "/app.js", "/style.css"} {
		if rec := fx.do(t, http.MethodGet, p); rec.Code != http.StatusOK {
			t.Fatalf("GET %s without token: %d", p, rec.Code)
		}
	}
}

func TestHostCheck(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) { c.AllowedHosts = []string{"ops.internal"} })
	for host, want := range map[string]int{
		"localhost:8080":     http.StatusOK,
		"LOCALHOST":          http.StatusOK,
		"127.0.0.1:9":        http.StatusOK,
		"[::1]:8080":         http.StatusOK,
		"10.1.2.3":           http.StatusOK,
		"ops.internal:8080":  http.StatusOK,
		"evil.example":       http.StatusForbidden,
		"evil.example:8080":  http.StatusForbidden,
		"localhost.evil.com": http.StatusForbidden,
	} {
		for _, p := range []string{"/api/v1/cluster", "/"} {
			if rec := fx.do(t, http.MethodGet, p, "Host", host); rec.Code != want {
				t.Errorf("GET %s Host %s: %d, want %d", p, host, rec.Code, want)
			}
		}
	}
	if rec := fx.do(t, http.MethodGet, "/healthz", "Host", "lb.example"); rec.Code != http.StatusOK {
		t.Errorf("healthz from a load balancer's host name: %d", rec.Code)
	}
}

func TestHealthz(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status *ops.ClusterStatus // nil: single node
		code   int
		text   string
	}{
		{"single", nil, 200, "active"},
		{"leader", &ops.ClusterStatus{Mode: ops.ModeGroup, Role: ops.RoleLeader, Active: true}, 200, "active"},
		{"follower", &ops.ClusterStatus{Mode: ops.ModeGroup, Role: ops.RoleFollower}, 503, "follower"},
		{"candidate", &ops.ClusterStatus{Mode: ops.ModeGroup, Role: ops.RoleCandidate}, 503, "candidate"},
		{"pair active", &ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RoleActive, Active: true}, 200, "active"},
		{"pair passive", &ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RolePassive}, 503, "passive"},
		{"active not ready", &ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RoleActive}, 503, "not active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, func(c *ops.Config) {
				c.Token = "tok" // /healthz never needs it
				if tc.status != nil {
					c.Cluster = &fakeCluster{status: *tc.status}
				}
			})
			rec := fx.do(t, http.MethodGet, "/healthz")
			if rec.Code != tc.code || strings.TrimSpace(rec.Body.String()) != tc.text {
				t.Fatalf("text: %d %q, want %d %q", rec.Code, rec.Body, tc.code, tc.text)
			}
			var js struct {
				Status, Role string
				Active       bool
			}
			fx.getJSON(t, http.MethodGet, "/healthz?format=json", tc.code, &js)
			if js.Status != tc.text || js.Active != (tc.code == 200) {
				t.Fatalf("json: %+v", js)
			}
			rec = fx.do(t, http.MethodGet, "/healthz", "Accept", "application/json")
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Fatalf("Accept: application/json gave %q", rec.Header().Get("Content-Type"))
			}
			if rec := fx.do(t, http.MethodHead, "/healthz"); rec.Code != tc.code {
				t.Fatalf("HEAD: %d", rec.Code)
			}
		})
	}
}

func TestListenAndServe(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) { c.ShutdownTimeout = 200 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- fx.srv.ListenAndServe(ctx, "127.0.0.1:0", func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	if code, body := get(t, base+"/healthz", ""); code != 200 || body != "active\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/api/v1/tickets/"+fx.done.String(), ""); code != 200 || !strings.Contains(body, fx.done.String()) {
		t.Fatalf("ticket: %d %s", code, body)
	}
	// A client that never finishes its headers does not hold the shutdown
	// up past ShutdownTimeout.
	slow, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ListenAndServe after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("shutdown took %v with ShutdownTimeout 200ms", took)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}

	// A busy address is an error, before ready is called.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = fx.srv.ListenAndServe(context.Background(), ln.Addr().String(), func(net.Addr) { t.Error("ready called") })
	if err == nil || !strings.Contains(err.Error(), "ops listen") {
		t.Fatalf("listen on a busy address: %v", err)
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) { c.ReadHeaderTimeout = 100 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- fx.srv.ListenAndServe(ctx, "127.0.0.1:0", func(a net.Addr) { addrc <- a }) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	conn, err := net.Dial("tcp", (<-addrc).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for {
		if _, err = conn.Read(buf); err != nil {
			break
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("server kept a connection with unfinished headers open")
	}
}

func TestConfigValidate(t *testing.T) {
	good := ops.DefaultConfig()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*ops.Config){
		"zero timeout":   func(c *ops.Config) { c.RequestTimeout = 0 },
		"no in flight":   func(c *ops.Config) { c.MaxInFlight = 0 },
		"no body":        func(c *ops.Config) { c.MaxBodyBytes = 0 },
		"no logger":      func(c *ops.Config) { c.Logger = nil },
		"negative reply": func(c *ops.Config) { c.MaxReplyBytes = -1 },
	} {
		c := ops.DefaultConfig()
		edit(&c)
		if err := c.Validate(); !errors.Is(err, ops.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
		if _, err := ops.New(c); !errors.Is(err, ops.ErrConfig) {
			t.Errorf("New with %s: %v, want ErrConfig", name, err)
		}
	}
}
