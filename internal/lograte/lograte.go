// Package lograte bounds log lines that repeat: a complaint a peer can
// cause with every message it sends (a bad worker command, a refused
// admin request, raft's failed heartbeats to a member that is down) is
// written once, then at most once per interval with the count of those
// left out since, so that one misbehaving peer cannot flood the log.
package lograte

import (
	"sync"
	"time"
)

// Every is the interval the broker's complaints are bounded to: one line
// per kind every 10 s, as its other per-client complaints (queue full,
// messages too large, clients not reading).
const Every = 10 * time.Second

// maxKinds bounds the kinds a Limiter remembers, so that keys a peer has
// a say in cannot grow it without limit.
const maxKinds = 1024

// Limiter decides, per kind of line, which are written. Safe for
// concurrent use; the zero value is not usable: use New.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time // when a line of this kind was last written
	suppressed uint64    // lines left out since last
}

// New returns a Limiter that lets through one line per kind every
// interval.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, kinds: make(map[string]*kind)}
}

// Allow reports whether a line of kind key, due at now, is to be written,
// and if so how many lines of that kind were left out since the last one
// written (to be logged with it). A line that is not written is counted.
func (l *Limiter) Allow(now time.Time, key string) (suppressed uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[key]
	if k == nil {
		if len(l.kinds) >= maxKinds {
			l.prune(now)
		}
		if len(l.kinds) >= maxKinds {
			// Full of kinds seen within the interval: more kinds than any
			// caller has by design, so a peer is making them up. Left out,
			// uncounted, rather than tracked.
			return 0, false
		}
		l.kinds[key] = &kind{last: now}
		return 0, true
	}
	if now.Sub(k.last) < l.every {
		k.suppressed++
		return 0, false
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return n, true
}

// prune forgets the kinds not written for an interval. A kind forgotten
// with lines left out loses their count; its next line is written.
func (l *Limiter) prune(now time.Time) {
	for key, k := range l.kinds {
		if now.Sub(k.last) >= l.every {
			delete(l.kinds, key)
		}
	}
}
