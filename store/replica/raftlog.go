package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/titanicmq/titanic/internal/lograte"
)

// raftLogEvery is how often, at most, one raft warning or error about one
// peer is written again. A member that is down makes the leader's raft
// fail a heartbeat and an appendEntries every backoff (two ERROR lines a
// second for as long as it is down, ~170,000 a day); said once, then
// twice a minute with the count of those left out, it is still seen.
const raftLogEvery = 30 * time.Second

// raftLogger is raft's hclog.Logger writing to the node's slog logger as
// structured records: raft's message as msg and its key/value pairs as
// attributes, at the slog level of raft's. (Formatted by hclog and put
// whole in msg, a record carried a second time and level in its
// message, and a log pipeline could neither filter on the peer or error
// nor group the lines of one dead peer.)
type raftLogger struct {
	log *slog.Logger
	// name is the hclog name raft gives a part of itself with Named
	// ("raft-net", ...), shown as the subsystem attribute.
	name string
	// implied are the With arguments, added to every record.
	implied []any
	// level is the least hclog level written: Info, as before (raft's
	// debug and trace lines are many and for raft's developers).
	level hclog.Level
	// limit bounds the repeats of a warning or error (same message, same
	// peer): shared by every logger of the node.
	limit *lograte.Limiter
}

var _ hclog.Logger = (*raftLogger)(nil)

// slogLevel maps hclog's levels onto slog's (trace is debug).
func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l >= hclog.Error:
		return slog.LevelError
	case l == hclog.Warn:
		return slog.LevelWarn
	case l == hclog.Info, l == hclog.NoLevel:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (l *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	if level >= hclog.Error {
		level = errorLevel(msg, args)
	}
	if level == hclog.Off || level != hclog.NoLevel && level < l.level {
		return
	}
	sl := slogLevel(level)
	ctx := context.Background()
	if !l.log.Enabled(ctx, sl) {
		return
	}
	attrs := make([]any, 0, 2+len(l.implied)+len(args))
	if l.name != "" {
		attrs = append(attrs, "subsystem", l.name)
	}
	attrs = appendArgs(attrs, l.implied)
	attrs = appendArgs(attrs, args)
	if sl >= slog.LevelWarn && l.limit != nil {
		n, ok := l.limit.Allow(time.Now(), msg+"\x00"+peerOf(attrs))
		if !ok {
			return
		}
		if n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
	}
	l.log.Log(ctx, sl, msg, attrs...)
}

// appendArgs appends raft's key/value pairs to attrs, each value as hclog
// would render it: hclog.Fmt's (raft's "servers" of a configuration,
// "%+v" and the servers) formatted, hclog.Hex, Octal and Binary in their
// base. Left as they are, slog printed the format and its arguments,
// "[%+v [...]]".
func appendArgs(attrs, kv []any) []any {
	for i, v := range kv {
		if i%2 == 1 {
			v = hclogValue(v)
		}
		attrs = append(attrs, v)
	}
	return attrs
}

func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	}
	return v
}

// errorLevel is the level of a raft ERROR record: Error, but for those
// that a healthy cluster meets in its course. "failed to take snapshot"
// with raft.ErrNothingNewToSnapshot, which a node that took over (a
// pair's survivor after a reform, its log just compacted) meets at its
// first snapshot interval, is debug; "peer has newer term, stopping
// replication", a leader deposed by an election it lost (a pair's two
// nodes starting together, a partition healed) and stepping down as it
// should, is a warning; so is "failed to make requestVote RPC", a
// candidate that cannot reach a peer: the peer is down or cut off, which
// is why there is an election (a pair's survivor whose raft's timer fires
// before Binary Star's failover logged it as an ERROR in a failover that
// went right). A peer down long is said by the leader's replication
// lines, which stay errors.
func errorLevel(msg string, kv []any) hclog.Level {
	switch msg {
	case "failed to take snapshot":
		for i := 0; i+1 < len(kv); i += 2 {
			if err, ok := kv[i+1].(error); ok && kv[i] == "error" && errors.Is(err, raft.ErrNothingNewToSnapshot) {
				return hclog.Debug
			}
		}
	case "peer has newer term, stopping replication", "failed to make requestVote RPC":
		return hclog.Warn
	}
	return hclog.Error
}

// peerOf returns the peer a raft record is about, as text ("" when
// none): raft names it "peer" (an address, an ID or a raft.Server) or
// "server-id".
func peerOf(kv []any) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok && (k == "peer" || k == "server-id") {
			return fmt.Sprint(kv[i+1])
		}
	}
	return ""
}

func (l *raftLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *raftLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *raftLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *raftLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *raftLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *raftLogger) IsTrace() bool { return l.level <= hclog.Trace }
func (l *raftLogger) IsDebug() bool { return l.level <= hclog.Debug }
func (l *raftLogger) IsInfo() bool  { return l.level <= hclog.Info }
func (l *raftLogger) IsWarn() bool  { return l.level <= hclog.Warn }
func (l *raftLogger) IsError() bool { return l.level <= hclog.Error }

func (l *raftLogger) ImpliedArgs() []any { return l.implied }

// With, Named and ResetNamed return new loggers, as hclog's do: raft
// keeps the one it asked for.
func (l *raftLogger) With(args ...any) hclog.Logger {
	c := *l
	c.implied = append(append([]any(nil), l.implied...), args...)
	return &c
}

func (l *raftLogger) Name() string { return l.name }

func (l *raftLogger) Named(name string) hclog.Logger {
	c := *l
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (l *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

// SetLevel changes this logger's level only: raft does not call it.
func (l *raftLogger) SetLevel(level hclog.Level) { l.level = level }
func (l *raftLogger) GetLevel() hclog.Level      { return l.level }

// StandardLogger and StandardWriter give a log.Logger (raft's transport
// takes one) whose lines become records at opts' level, Info by default.
func (l *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *raftLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return stdWriter{l: l, level: level}
}

type stdWriter struct {
	l     *raftLogger
	level hclog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	w.l.Log(w.level, strings.TrimSpace(string(p)))
	return len(p), nil
}
