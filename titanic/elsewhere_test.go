package titanic

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// README (Split brain, "A node that may be behind says so"): while a pair
// node has gone on alone and its peer has not rejoined, an unknown ticket
// minted by the peer answers "500 not ready: ... may be held by the peer"
// (clients retry) instead of 400 (which clients take as final), "and so
// does a close of such a ticket". The lifecycle services on the same
// ticket answered 400 unknown ticket: `titanic cancel` exited 4
// ("unknown") for a ticket the peer acknowledged, and after the merge the
// ticket ran although its owner had cancelled it; a purge answered 400 as
// well, and the peer's handover brought the failed ticket back (found by
// a reviewer of the pair). titanic.attempts of such a ticket is left to
// the attempts' own unknown-ticket answer.
func TestLifecycleOpsOnPeerTicketNotFinalBeforeMerge(t *testing.T) {
	cfg := Config{MintTag: 1, MaybeElsewhere: func(id store.ID) bool { return Tagged(id, 2) }}
	h := newHarness(t, cfg, "")
	peers := store.NewID()
	peers[15] = peers[15]&0xf0 | 2
	// The lookups and the close keep the promise.
	if r := h.call(tsp.SvcReply, peers.String()); codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), "not ready") {
		t.Fatalf("reply of the peer's unknown ticket = %q, want 500 not ready", r)
	}
	var bad []string
	for _, svc := range []string{tsp.SvcCancel, tsp.SvcPurge, tsp.SvcRetry} {
		r := h.call(svc, peers.String())
		if codeOf(r) != tsp.CodeError || len(r) < 2 || !strings.HasPrefix(string(r[1]), "not ready") {
			bad = append(bad, svc+" answered "+strings.Join(strs(r), " | "))
		}
	}
	// The HTTP API's close (DELETE /api/v1/tickets/ID) and cancel go
	// through Service.Close and Service.Cancel: 404 unknown.
	if err := h.svc.Close(context.Background(), peers); !errors.Is(err, ErrNotMerged) {
		bad = append(bad, fmt.Sprintf("Service.Close (HTTP API close) returned %v", err))
	}
	if err := h.svc.Cancel(context.Background(), peers, ""); !errors.Is(err, ErrNotMerged) {
		bad = append(bad, fmt.Sprintf("Service.Cancel (HTTP API cancel) returned %v", err))
	}
	if len(bad) > 0 {
		t.Fatalf("a ticket the peer may hold (its split not merged yet), want 500 not ready as for titanic.reply/close:\n  %s", strings.Join(bad, "\n  "))
	}
}

func strs(r [][]byte) []string {
	out := make([]string, len(r))
	for i, f := range r {
		out[i] = string(f)
	}
	return out
}
