package client

import (
	"errors"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/curve"
)

// curveFake is a raw CURVE ROUTER answering MDPC01 requests with "ok",
// with a ZAP handler that allows only allowed.
type curveFake struct {
	endpoint string
	zap      *curve.ZAPHandler
	mu       sync.Mutex
	users    []string // the ZAP User-Id of each request's connection
}

func newCurveFake(t *testing.T, server curve.KeyPair, allowed string) *curveFake {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	f := &curveFake{zap: curve.NewZAPHandler(curve.ZAPConfig{Allow: func(k string) bool { return k == allowed }})}
	if err := f.zap.Start(zctx); err != nil {
		t.Fatal(err)
	}
	s, err := zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetLinger(0)
	if err := curve.ApplyServer(s, server, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	f.endpoint, _ = s.GetLastEndpoint()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		p := zmq.NewPoller()
		p.Add(s, zmq.POLLIN)
		for {
			select {
			case <-stop:
				_ = s.Close()
				_ = f.zap.Close()
				_ = zctx.Term()
				return
			default:
			}
			if polled, err := p.Poll(20 * time.Millisecond); err != nil || len(polled) == 0 {
				continue
			}
			msg, user, err := recvWithUser(s)
			if err != nil || len(msg) < 4 {
				continue
			}
			f.mu.Lock()
			f.users = append(f.users, user)
			f.mu.Unlock()
			_, _ = s.SendMessage(msg[0], "", "MDPC01", msg[3], "ok")
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return f
}

// recvWithUser receives a ROUTER message and the ZAP User-Id of its
// connection, which the frames from the wire carry (the identity frame,
// made by the ROUTER, carries none).
func recvWithUser(s *zmq.Socket) (msg []string, user string, err error) {
	for {
		var frame []byte
		if len(msg) == 1 {
			var meta map[string]string
			frame, meta, err = s.RecvBytesWithMetadata(0, "User-Id")
			user = meta["User-Id"]
		} else {
			frame, err = s.RecvBytes(0)
		}
		if err != nil {
			return nil, "", err
		}
		msg = append(msg, string(frame))
		if more, err := s.GetRcvmore(); err != nil || !more {
			return msg, user, err
		}
	}
}

func TestCurveClient(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	server, _ := curve.NewKeyPair()
	me, _ := curve.NewKeyPair()
	stranger, _ := curve.NewKeyPair()
	f := newCurveFake(t, server, me.Public)

	c, err := New(Config{Brokers: []string{f.endpoint}, Timeout: 2 * time.Second, Retries: 1,
		Curve: &CurveClient{ServerPublic: server.Public, Public: me.Public, Secret: me.Secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Request(testCtx(t), "echo", frames("hi"))
	if err != nil || len(rep) != 1 || string(rep[0]) != "ok" {
		t.Fatalf("allowed client: %q, %v", rep, err)
	}
	f.mu.Lock()
	users := append([]string(nil), f.users...)
	f.mu.Unlock()
	if len(users) != 1 || users[0] != me.Public {
		t.Fatalf("server saw User-Id %q, want the client's key %s", users, me.Public)
	}

	// Wrong key, or a wrong idea of the server's key: nothing through.
	for name, keys := range map[string]*CurveClient{
		"unknown key":      {ServerPublic: server.Public, Public: stranger.Public, Secret: stranger.Secret},
		"wrong server key": {ServerPublic: stranger.Public, Public: me.Public, Secret: me.Secret},
		"plain":            nil,
	} {
		c, err := New(Config{Brokers: []string{f.endpoint}, Timeout: 300 * time.Millisecond, Retries: 1, Curve: keys})
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := c.Request(testCtx(t), "echo", frames("hi")); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %q, %v; want ErrUnavailable", name, rep, err)
		}
		c.Close()
	}
	if st := f.zap.Stats(); st.Allowed != 1 || st.Denied == 0 {
		t.Errorf("zap stats %+v: want one allowed, the unknown key denied", st)
	}
}

func TestCurveClientConfig(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	a, _ := curve.NewKeyPair()
	b, _ := curve.NewKeyPair()
	for name, k := range map[string]CurveClient{
		"no server key":   {Public: a.Public, Secret: a.Secret},
		"mismatched pair": {ServerPublic: b.Public, Public: a.Public, Secret: b.Secret},
		"not Z85":         {ServerPublic: b.Public[:39] + "~", Public: a.Public, Secret: a.Secret},
	} {
		if _, err := New(Config{Curve: &k}); !errors.Is(err, ErrConfig) || !errors.Is(err, curve.ErrBadKey) {
			t.Errorf("%s: New: %v; want ErrConfig and ErrBadKey", name, err)
		}
	}
}
