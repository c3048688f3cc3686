package curve

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ZAPEndpoint is where libzmq looks for the ZAP handler of a context
// (RFC 27).
const ZAPEndpoint = "inproc://zeromq.zap.01"

// zapVersion is the only ZAP version there is.
const zapVersion = "1.0"

// DefaultDenyLogEvery is the default of ZAPConfig.DenyLogEvery.
const DefaultDenyLogEvery = 10 * time.Second

// zapPollSlice bounds how long Close waits for the handler's goroutine.
const zapPollSlice = 50 * time.Millisecond

// ZAP status codes (RFC 27).
const (
	zapOK       = "200"
	zapDenied   = "400"
	zapInternal = "500"
)

// ZAPConfig configures a ZAPHandler.
type ZAPConfig struct {
	// Allow decides whether a CURVE client with this Z85 public key may
	// connect. Nil denies everyone. It is called on the handler's
	// goroutine, once per handshake, and should be fast (a map lookup,
	// such as Allowlist.Allowed).
	Allow func(pubZ85 string) bool
	// Domain, when set, is the only ZAP domain allowed: a request for
	// another domain (a socket of the same context configured for
	// something else) is denied.
	Domain string
	// Others admits the requests of other ZAP domains, each by its own
	// function (a broker's peering sockets, under their own domain, take
	// only the peer clusters' keys). A domain in neither is denied.
	Others map[string]func(pubZ85 string) bool
	// Logger receives denials (at Warn, rate limited) and admissions (at
	// Debug). Nil: slog.Default().
	Logger *slog.Logger
	// DenyLogEvery is the least time between two denial logs; denials in
	// between are counted and reported with the next log. Zero:
	// DefaultDenyLogEvery.
	DenyLogEvery time.Duration
}

// ZAPStats counts the handler's answers since NewZAPHandler.
type ZAPStats struct {
	Requests uint64 // ZAP requests received
	Allowed  uint64 // answered 200
	Denied   uint64 // answered 400 or 500: unknown key, other mechanism or domain, malformed request
}

// ZAPHandler answers libzmq's ZAP requests for one zmq.Context. Create it
// with NewZAPHandler, Start it on a context before any CURVE server socket
// of that context binds, and Close it after those sockets are closed and
// before the context is terminated. Stats, Done and Err are safe from any
// goroutine.
type ZAPHandler struct {
	cfg ZAPConfig
	log *slog.Logger

	requests, allowed, denied atomic.Uint64

	startOnce sync.Once
	closeOnce sync.Once
	started   atomic.Bool   // set by Start when the goroutine runs
	stop      chan struct{} // closed by Close
	failed    chan struct{} // closed when the goroutine stops serving
	done      chan struct{} // closed when the goroutine has closed its socket
	err       error         // why it stopped serving; written before failed closes
}

// NewZAPHandler returns a handler for cfg. It opens no socket.
func NewZAPHandler(cfg ZAPConfig) *ZAPHandler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DenyLogEvery <= 0 {
		cfg.DenyLogEvery = DefaultDenyLogEvery
	}
	return &ZAPHandler{
		cfg:    cfg,
		log:    cfg.Logger.With("auth", "zap"),
		stop:   make(chan struct{}),
		failed: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Stats returns the handler's counters.
func (h *ZAPHandler) Stats() ZAPStats {
	return ZAPStats{Requests: h.requests.Load(), Allowed: h.allowed.Load(), Denied: h.denied.Load()}
}

// Done is closed when the handler stops serving: after Close, or when its
// socket failed (Err says why). A server whose handler failed should stop:
// its pending handshakes stall until then.
func (h *ZAPHandler) Done() <-chan struct{} { return h.failed }

// Err returns why the handler stopped serving, or nil while it serves and
// after a clean Close.
func (h *ZAPHandler) Err() error {
	select {
	case <-h.failed:
		return h.err
	default:
		return nil
	}
}

// Start binds the handler's REP socket at ZAPEndpoint in zctx and serves
// on a goroutine of its own until Close. It returns once the socket is
// bound, or the error that prevented it (for example another handler
// already bound in zctx). A handler starts once.
func (h *ZAPHandler) Start(zctx *zmq.Context) error {
	err := errors.New("zap handler started twice")
	h.startOnce.Do(func() {
		if zctx == nil {
			err = errors.New("zap handler: nil zmq context")
			return
		}
		ready := make(chan error, 1)
		go h.serve(zctx, ready)
		if err = <-ready; err == nil {
			h.started.Store(true)
		}
	})
	return err
}

// Close stops the handler and closes its socket, waiting for both. It
// returns the error that had stopped the handler, if any. It is safe to
// call more than once, and on a handler that never started.
func (h *ZAPHandler) Close() error {
	h.closeOnce.Do(func() { close(h.stop) })
	if h.started.Load() {
		<-h.done
	}
	return h.Err()
}

// serve owns the REP socket: it creates, binds, uses and closes it.
func (h *ZAPHandler) serve(zctx *zmq.Context, ready chan<- error) {
	rep, err := zctx.NewSocket(zmq.REP)
	if err != nil {
		ready <- fmt.Errorf("zap socket: %w", err)
		return
	}
	if err := rep.SetLinger(0); err != nil {
		_ = rep.Close()
		ready <- fmt.Errorf("zap socket: %w", err)
		return
	}
	if err := rep.Bind(ZAPEndpoint); err != nil {
		_ = rep.Close()
		ready <- fmt.Errorf("bind %s: %w", ZAPEndpoint, err)
		return
	}
	defer close(h.done)
	ready <- nil
	err = h.loop(rep)
	h.err = err
	close(h.failed)
	if err != nil {
		h.log.Error("zap handler failed: CURVE handshakes stall until the server stops", "err", err)
		// Keep the socket bound until Close: libzmq lets every client in
		// when a context has no ZAP handler.
		<-h.stop
	}
	_ = rep.Close()
}

// loop answers requests until stop. It returns nil on stop.
func (h *ZAPHandler) loop(rep *zmq.Socket) error {
	poller := zmq.NewPoller()
	poller.Add(rep, zmq.POLLIN)
	var lastLog time.Time
	var suppressed uint64
	for {
		select {
		case <-h.stop:
			return nil
		default:
		}
		polled, err := poller.Poll(zapPollSlice)
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			return fmt.Errorf("zap poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		req, err := rep.RecvMessageBytes(zmq.DONTWAIT)
		if err != nil {
			if e := zmq.AsErrno(err); e == zmq.Errno(syscall.EAGAIN) || e == zmq.Errno(syscall.EINTR) {
				continue
			}
			return fmt.Errorf("zap receive: %w", err)
		}
		h.requests.Add(1)
		ans := h.decide(req)
		if ans.code == zapOK {
			h.allowed.Add(1)
			h.log.Debug("connection allowed", "key", ans.userID, "address", ans.address, "domain", ans.domain)
		} else {
			h.denied.Add(1)
			if now := time.Now(); now.Sub(lastLog) >= h.cfg.DenyLogEvery {
				h.log.Warn("connection denied", "reason", ans.text, "key", ans.key, "address", ans.address,
					"mechanism", ans.mechanism, "domain", ans.domain,
					"denied_since_last_log", suppressed, "denied_total", h.denied.Load())
				lastLog, suppressed = now, 0
			} else {
				suppressed++
			}
		}
		reply := [][]byte{[]byte(zapVersion), ans.requestID, []byte(ans.code), []byte(ans.text), []byte(ans.userID), {}}
		if _, err := rep.SendMessage(reply); err != nil {
			return fmt.Errorf("zap send: %w", err)
		}
	}
}

// answer is the decision on one ZAP request, with what logs show.
type answer struct {
	requestID                       []byte
	code, text, userID              string
	domain, address, mechanism, key string
}

// decide applies the rules to one request: version, request id, domain,
// address, routing id, mechanism, credentials... (RFC 27).
func (h *ZAPHandler) decide(req [][]byte) answer {
	var a answer
	if len(req) >= 2 {
		a.requestID = req[1]
	}
	if len(req) < 6 || string(req[0]) != zapVersion {
		a.code, a.text = zapInternal, "malformed ZAP request"
		return a
	}
	a.domain, a.address, a.mechanism = string(req[2]), string(req[3]), string(req[5])
	creds := req[6:]
	switch {
	case a.mechanism != "CURVE":
		a.code, a.text = zapDenied, "mechanism "+a.mechanism+" not allowed"
	case len(creds) != 1 || len(creds[0]) != 32:
		a.code, a.text = zapInternal, "malformed CURVE credentials"
	default:
		a.key = zmq.Z85encode(string(creds[0]))
		allow := h.cfg.Allow
		if h.cfg.Domain != "" && a.domain != h.cfg.Domain {
			allow = h.cfg.Others[a.domain]
		}
		switch {
		case allow == nil && a.domain != h.cfg.Domain:
			a.code, a.text = zapDenied, "domain not served"
		case !h.allow(allow, a.key):
			a.code, a.text = zapDenied, "key not allowed"
		default:
			a.code, a.text, a.userID = zapOK, "OK", a.key
		}
	}
	return a
}

// allow calls fn (cfg.Allow, or an Others function); nil or a panic in
// it denies.
func (h *ZAPHandler) allow(fn func(string) bool, key string) (ok bool) {
	if fn == nil {
		return false
	}
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("allow function panicked: denied", "key", key, "panic", p)
			ok = false
		}
	}()
	return fn(key)
}
