package curve

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
)

const bound = 5 * time.Second

func newContext(t *testing.T) *zmq.Context {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	return zctx
}

// zapCall sends one raw ZAP request through a REQ socket in zctx.
func zapCall(t *testing.T, zctx *zmq.Context, frames ...string) []string {
	t.Helper()
	req, err := zctx.NewSocket(zmq.REQ)
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	_ = req.SetLinger(0)
	_ = req.SetRcvtimeo(bound)
	if err := req.Connect(ZAPEndpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := req.SendMessage(frames); err != nil {
		t.Fatal(err)
	}
	reply, err := req.RecvMessage(0)
	if err != nil {
		t.Fatalf("no ZAP reply to %q within %s: %v", frames, bound, err)
	}
	return reply
}

// The handler's rules, on raw requests: only CURVE with an allowed key
// in the handler's domain passes; denials are counted and their log is
// rate limited.
func TestZAPDecisions(t *testing.T) {
	needCurve(t)
	ok, _ := NewKeyPair()
	other, _ := NewKeyPair()
	logs := &harness.SyncBuffer{}
	zctx := newContext(t)
	h := NewZAPHandler(ZAPConfig{
		Allow:        func(k string) bool { return k == ok.Public },
		Domain:       "titanic",
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		DenyLogEvery: time.Hour,
	})
	if err := h.Start(zctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	raw := func(k KeyPair) string { d, _ := decodeKey(k.Public); return string(d) }
	cases := []struct {
		name   string
		frames []string
		code   string
	}{
		{"allowed", []string{"1.0", "1", "titanic", "127.0.0.1", "", "CURVE", raw(ok)}, "200"},
		{"unknown key", []string{"1.0", "2", "titanic", "127.0.0.1", "", "CURVE", raw(other)}, "400"},
		{"other domain", []string{"1.0", "3", "elsewhere", "127.0.0.1", "", "CURVE", raw(ok)}, "400"},
		{"NULL", []string{"1.0", "4", "titanic", "127.0.0.1", "", "NULL"}, "400"},
		{"PLAIN", []string{"1.0", "5", "titanic", "127.0.0.1", "", "PLAIN", "user", "pass"}, "400"},
		{"short key", []string{"1.0", "6", "titanic", "127.0.0.1", "", "CURVE", "short"}, "500"},
		{"bad version", []string{"2.0", "7", "titanic", "127.0.0.1", "", "CURVE", raw(ok)}, "500"},
		{"too few frames", []string{"1.0", "8"}, "500"},
	}
	for _, c := range cases {
		reply := zapCall(t, zctx, c.frames...)
		if len(reply) != 6 || reply[0] != "1.0" || reply[2] != c.code {
			t.Errorf("%s: reply %q, want 6 frames, version 1.0, status %s", c.name, reply, c.code)
			continue
		}
		if reply[1] != c.frames[1] {
			t.Errorf("%s: request id %q, want %q", c.name, reply[1], c.frames[1])
		}
		if c.code == "200" && reply[4] != ok.Public {
			t.Errorf("%s: user id %q, want the client key", c.name, reply[4])
		}
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := zctx.Term(); err != nil {
		t.Errorf("Term: %v", err)
	}
	st := h.Stats()
	if st.Requests != 8 || st.Allowed != 1 || st.Denied != 7 {
		t.Errorf("stats %+v, want 8 requests, 1 allowed, 7 denied", st)
	}
	if n := strings.Count(logs.String(), "connection denied"); n != 1 {
		t.Errorf("%d denial logs for 7 denials within DenyLogEvery, want 1:\n%s", n, logs)
	}
}

// A real CURVE server socket with the handler in its context: an allowed
// client gets through, an unknown key and a plain client do not.
func TestZAPWithCurveSockets(t *testing.T) {
	needCurve(t)
	server, _ := NewKeyPair()
	good, _ := NewKeyPair()
	bad, _ := NewKeyPair()
	zctx := newContext(t)
	h := NewZAPHandler(ZAPConfig{Allow: func(k string) bool { return k == good.Public }, Domain: "test"})
	if err := h.Start(zctx); err != nil {
		t.Fatal(err)
	}
	if err := NewZAPHandler(ZAPConfig{}).Start(zctx); err == nil {
		t.Error("a second handler bound in the same context")
	}
	router, err := zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	_ = router.SetLinger(0)
	if err := ApplyServer(router, server, "test"); err != nil {
		t.Fatal(err)
	}
	if err := router.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, _ := router.GetLastEndpoint()

	cctx := newContext(t) // the clients' side, as in another process
	dial := func(keys *ClientKeys) *zmq.Socket {
		s, err := cctx.NewSocket(zmq.DEALER)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetLinger(0)
		// A DEALER's send blocks while it has no pipe: the plain
		// client's handshake fails and its pipe goes until the next
		// reconnect, and the send waited for one forever (the test ran
		// into the package's 15 minute limit under load).
		_ = s.SetSndtimeo(bound)
		if keys != nil {
			if err := keys.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := keys.Apply(s); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Connect(ep); err != nil {
			t.Fatal(err)
		}
		return s
	}
	recv := func(within time.Duration) []string {
		p := zmq.NewPoller()
		p.Add(router, zmq.POLLIN)
		got, err := p.Poll(within)
		if err != nil || len(got) == 0 {
			return nil
		}
		m, _ := router.RecvMessage(0)
		return m
	}
	denied := dial(&ClientKeys{ServerPublic: server.Public, Public: bad.Public, Secret: bad.Secret})
	plain := dial(nil)
	allowed := dial(&ClientKeys{ServerPublic: server.Public, Public: good.Public, Secret: good.Secret})
	_, _ = denied.SendMessage("from-denied") // shut out: it may never go
	_, _ = plain.SendMessage("from-plain")
	if _, err := allowed.SendMessage("from-allowed"); err != nil {
		t.Fatalf("the allowed client's send: %v", err)
	}
	m := recv(bound)
	if len(m) != 2 || m[1] != "from-allowed" {
		t.Fatalf("server got %q, want the allowed client's message", m)
	}
	if m := recv(300 * time.Millisecond); m != nil {
		t.Fatalf("server got %q from a client that should be shut out", m)
	}
	deadline := time.Now().Add(bound)
	for h.Stats().Denied == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := h.Stats()
	if st.Denied == 0 || st.Allowed != 1 {
		t.Errorf("stats %+v: want the unknown key denied and one allowed", st)
	}
	// The plain client's handshake fails on the mechanism, before ZAP:
	// it is not counted, but it got nothing through (checked above).
	_ = router.Close()
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, s := range []*zmq.Socket{denied, plain, allowed} {
		_ = s.Close()
	}
	if err := cctx.Term(); err != nil {
		t.Error(err)
	}
	if err := zctx.Term(); err != nil {
		t.Error(err)
	}
}

func TestZAPCloseWithoutStart(t *testing.T) {
	h := NewZAPHandler(ZAPConfig{})
	if err := h.Close(); err != nil {
		t.Fatalf("Close of an unstarted handler: %v", err)
	}
	if err := h.Start(nil); err == nil {
		t.Fatal("Start with a nil context succeeded")
	}
}
