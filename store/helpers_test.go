package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// testLogger sends the store's logs to t.Log, so they show with the test
// that caused them.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// mustOpen opens a store at path and closes it at the end of the test,
// after checking its consistency.
func mustOpen(tb testing.TB, path string) *store.BoltStore {
	tb.Helper()
	return mustOpenWith(tb, path, store.Options{})
}

// mustOpenWith is mustOpen with options; tests that make thousands of
// commits and are not about durability set NoSync.
func mustOpenWith(tb testing.TB, path string, opts store.Options) *store.BoltStore {
	tb.Helper()
	opts.Logger = testLogger(tb)
	s, err := store.Open(path, opts)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Check(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("check at cleanup: %v", err)
		}
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("close at cleanup: %v", err)
		}
	})
	return s
}

// newStore opens a fresh store in a temporary directory.
func newStore(tb testing.TB) (*store.BoltStore, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "titanic.db")
	return mustOpen(tb, path), path
}

var t0 = time.Date(2025, 11, 23, 3, 0, 0, 0, time.UTC)

// at returns a distinct, increasing op time.
func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }

func submit(id store.ID, service string, body ...[]byte) store.Op {
	return store.Op{Kind: store.OpSubmit, ID: id, Time: t0, Service: service, Body: body}
}

func op(kind store.OpKind, id store.ID) store.Op {
	return store.Op{Kind: kind, ID: id, Time: t0.Add(time.Second)}
}

// mustApply applies ops and fails the test on a batch error or any op
// error.
func mustApply(tb testing.TB, s store.Store, ops ...store.Op) []store.Result {
	tb.Helper()
	res, err := s.Apply(context.Background(), ops)
	if err != nil {
		tb.Fatalf("apply: %v", err)
	}
	if len(res) != len(ops) {
		tb.Fatalf("apply: %d results for %d ops", len(res), len(ops))
	}
	for i, r := range res {
		if r.Err != nil {
			tb.Fatalf("apply op %d (%s): %v", i, ops[i].Kind, r.Err)
		}
	}
	return res
}

// applyOne applies one op and returns its result, failing only on a batch
// error.
func applyOne(tb testing.TB, s store.Store, o store.Op) store.Result {
	tb.Helper()
	res, err := s.Apply(context.Background(), []store.Op{o})
	if err != nil {
		tb.Fatalf("apply %s: %v", o.Kind, err)
	}
	return res[0]
}

// unfinished collects Unfinished's tickets.
func unfinished(tb testing.TB, s store.Store) []store.Ticket {
	tb.Helper()
	var out []store.Ticket
	if err := s.Unfinished(context.Background(), func(t store.Ticket) error {
		out = append(out, t)
		return nil
	}); err != nil {
		tb.Fatalf("unfinished: %v", err)
	}
	return out
}

func ids(ts []store.Ticket) []store.ID {
	out := make([]store.ID, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}
