package ops

import (
	"fmt"
	"log/slog"
	"time"
)

// Limits of the API.
const (
	// DefaultListLimit is the page size of GET /api/v1/tickets without
	// limit=, and MaxListLimit the largest limit= accepted.
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// MaxClients is the most clients GET /api/v1/clients lists.
	MaxClients = 1000
)

// Config configures a Server. The sources may be nil: a nil Cluster is a
// single node (always active), a nil Clients an empty list, and the other
// nil sources make their endpoints answer 503 and leave their metrics out.
type Config struct {
	Tickets  Tickets
	Queues   Queues
	Workers  Workers
	Counters Counters
	Cluster  Cluster
	Clients  Clients
	// QueueStats serves /api/v1/queues: titanic.stats as JSON.
	QueueStats QueueStats
	// Submitter takes POST /api/v1/tickets; nil: the endpoint answers 503.
	Submitter Submitter
	// Jobs takes retry, cancel, pause, resume and the attempt history;
	// nil: those endpoints answer 503.
	Jobs Jobs
	// Bodies gives ticket views their request body; nil: none is shown.
	Bodies Bodies

	// Token, when set, is required as "Authorization: Bearer TOKEN" by
	// /metrics and /api/v1/*; /healthz and the dashboard's static files
	// (which hold no data) are served without it. The listener binds
	// localhost by default; set a token before exposing it.
	Token string
	// AllowedHosts are extra Host header names accepted when Token is
	// empty. Without a token only localhost and IP literals are accepted,
	// which stops DNS-rebinding pages from driving a local listener.
	AllowedHosts []string

	// Version is reported by titanic_build_info and the dashboard.
	Version string

	// Timeouts of the http.Server (ListenAndServe, Serve), and of each
	// request's calls to the sources.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	RequestTimeout    time.Duration
	// ShutdownTimeout bounds the graceful shutdown when ctx ends.
	ShutdownTimeout time.Duration

	// MaxHeaderBytes and MaxBodyBytes bound requests; MaxReplyBytes bounds
	// the reply included in GET /api/v1/tickets/{id} (a larger one is left
	// out and flagged). MaxInFlight bounds concurrent requests (except
	// /healthz); more are answered 503.
	MaxHeaderBytes int
	MaxBodyBytes   int64
	// MaxSubmitBytes bounds the request of POST /api/v1/tickets (the
	// JSON, with a base64 body a third larger than the body itself).
	MaxSubmitBytes int64
	MaxReplyBytes  int
	MaxInFlight    int
	// MaxServices bounds the services shown one by one in the
	// per-service metrics and GET /api/v1/services: those with the most
	// tickets; the others are summed under OtherService (bound.go). 0:
	// DefaultMaxServices.
	MaxServices int

	Logger *slog.Logger
}

// DefaultConfig returns a Config with the default limits and no sources.
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		RequestTimeout:    10 * time.Second,
		ShutdownTimeout:   5 * time.Second,
		MaxHeaderBytes:    16 << 10,
		MaxBodyBytes:      64 << 10,
		MaxSubmitBytes:    1 << 20,
		MaxReplyBytes:     1 << 20,
		MaxInFlight:       64,
		Logger:            slog.Default(),
	}
}

// Validate reports the first invalid field. Zero limits and timeouts are
// invalid: start from DefaultConfig.
func (c *Config) Validate() error {
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"ReadHeaderTimeout", c.ReadHeaderTimeout},
		{"ReadTimeout", c.ReadTimeout},
		{"WriteTimeout", c.WriteTimeout},
		{"IdleTimeout", c.IdleTimeout},
		{"RequestTimeout", c.RequestTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
	}
	for _, d := range durations {
		if d.d <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %v", ErrConfig, d.name, d.d)
		}
	}
	switch {
	case c.MaxHeaderBytes <= 0:
		return fmt.Errorf("%w: MaxHeaderBytes must be positive", ErrConfig)
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("%w: MaxBodyBytes must be positive", ErrConfig)
	case c.MaxSubmitBytes <= 0:
		return fmt.Errorf("%w: MaxSubmitBytes must be positive", ErrConfig)
	case c.MaxReplyBytes < 0:
		return fmt.Errorf("%w: MaxReplyBytes must not be negative", ErrConfig)
	case c.MaxInFlight <= 0:
		return fmt.Errorf("%w: MaxInFlight must be positive", ErrConfig)
	case c.Logger == nil:
		return fmt.Errorf("%w: Logger is required", ErrConfig)
	}
	return nil
}
