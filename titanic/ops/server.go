package ops

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server is the operations HTTP layer: metrics, health, the JSON API and
// the dashboard. It is an http.Handler; ListenAndServe runs it on its own
// bounded http.Server. All methods are safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	mux       *http.ServeMux
	tokenHash [sha256.Size]byte
	inFlight  chan struct{}
	metrics   *metrics
	// origins refuses state-changing requests a browser marks as
	// cross-origin (see crossSite).
	origins *http.CrossOriginProtection
}

var _ http.Handler = (*Server)(nil)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "ops"),
		mux:      http.NewServeMux(),
		inFlight: make(chan struct{}, cfg.MaxInFlight),
		origins:  http.NewCrossOriginProtection(),
	}
	if cfg.Token != "" {
		s.tokenHash = sha256.Sum256([]byte(cfg.Token))
	}
	m, err := newMetrics(s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if err := s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

// ObserveCommit records how long one commit took (a titanic committer
// batch: store Apply, which is an fsync on one node or a raft quorum
// commit when replicated). It feeds titanic_commit_duration_seconds.
func (s *Server) ObserveCommit(d time.Duration) { s.metrics.commit.Observe(d.Seconds()) }

// ObserveFsync records how long one store write transaction took to
// commit and fsync. It feeds titanic_fsync_duration_seconds.
func (s *Server) ObserveFsync(d time.Duration) { s.metrics.fsync.Observe(d.Seconds()) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "/healthz" {
		s.mux.ServeHTTP(w, r) // for load balancers: no host check, token or limit
		return
	}
	if s.cfg.Token == "" && !s.hostAllowed(r.Host) {
		writeError(w, http.StatusForbidden, "host %q not allowed without a token (a defence against DNS rebinding): set http.token or http.token_file (--http-token, --http-token-file), or ask by localhost or an IP address", r.Host)
		return
	}
	select {
	case s.inFlight <- struct{}{}:
		defer func() { <-s.inFlight }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many requests in flight")
		return
	}
	if r.Body != nil {
		limit := s.cfg.MaxBodyBytes
		if r.Method == http.MethodPost && r.URL.Path == "/api/v1/tickets" {
			limit = s.cfg.MaxSubmitBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	s.mux.ServeHTTP(w, r)
}

// authorized wraps h with the bearer token check (when a token is set).
func (s *Server) authorized(h http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="titanic"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tokenOK compares in constant time; hashing first hides the length too.
func (s *Server) tokenOK(header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1
}

// hostAllowed reports whether a request without a token may use host:
// localhost, an IP literal, or one of AllowedHosts.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(host, a) {
			return true
		}
	}
	return false
}

// ListenAndServe listens on addr (host:port; port 0 picks one), calls
// ready with the bound address (when ready is not nil), and serves until
// ctx is done. It then shuts down gracefully: requests in flight get
// ShutdownTimeout to finish, after which the remaining connections are
// closed. It returns nil after a shutdown caused by ctx, or the listen or
// serve error.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ops listen %s: %w", addr, err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (which it closes) until ctx is done; see
// ListenAndServe.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("ops http listening", "addr", ln.Addr().String(), "token", s.cfg.Token != "")
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ops serve: %w", err)
	case <-ctx.Done():
	}
	// Graceful: requests in flight finish, within ShutdownTimeout; then
	// the connections left (slow or stuck clients) are closed.
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var err error
	if serr := hs.Shutdown(sctx); serr != nil {
		s.log.Warn("ops http shutdown timed out, closing connections", "err", serr)
		if cerr := hs.Close(); cerr != nil {
			err = fmt.Errorf("ops close: %w", cerr)
		}
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("ops serve: %w", serr))
	}
	s.log.Info("ops http stopped")
	return err
}

// newHistogram returns a latency histogram from 100µs to about 6.5s.
func newHistogram(name, help string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    name,
		Help:    help,
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
	})
}
