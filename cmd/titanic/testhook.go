package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"github.com/titanicmq/titanic/store"
)

// stallAtReplyEnv names a test-only hook, off unless the variable is set
// to 1: a single-node broker's store then stops committing at the first
// batch that holds a worker's reply; that batch and every later one wait
// for ever, while lookups still read the store. The crash tests
// (internal/e2e) use it to kill the broker between a worker's reply and
// its commit without guessing at timing. Never set it in production: the
// broker makes nothing durable after the first reply. It is not a
// setting (TITANIC_<SECTION>_<KEY>): config ignores TITANIC_* variables of
// no section.
const stallAtReplyEnv = "TITANIC_TESTHOOK_STALL_AT_REPLY"

func stallAtReplyOn(environ []string) bool {
	return slices.Contains(environ, stallAtReplyEnv+"=1")
}

// stallAtReply is the store of the stallAtReplyEnv hook. It keeps the
// bolt store's other methods (usage, backups, reads).
type stallAtReply struct {
	*store.BoltStore
	log     *slog.Logger
	mu      sync.Mutex
	stalled bool
}

func (s *stallAtReply) Apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	ch := make(chan store.Done, 1)
	s.ApplyAsync(ops, func(d store.Done) { ch <- d })
	select {
	case d := <-ch:
		return d.Results, d.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ApplyAsync never completes a stalled call: it is neither applied nor
// answered, as if its commit never ended.
func (s *stallAtReply) ApplyAsync(ops []store.Op, done func(store.Done)) {
	s.mu.Lock()
	if !s.stalled && slices.ContainsFunc(ops, func(op store.Op) bool { return op.Kind == store.OpReply }) {
		s.stalled = true
		s.log.Warn("test hook: commits stalled at the first reply", "hook", stallAtReplyEnv)
	}
	stalled := s.stalled
	s.mu.Unlock()
	if stalled {
		return
	}
	s.BoltStore.ApplyAsync(ops, done)
}
