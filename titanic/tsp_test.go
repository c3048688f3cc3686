package titanic

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// FuzzParseTSP feeds every TSP request parser frames cut from fuzz bytes
// (split on 0x00); none may panic, and accepted input must be well formed.
func FuzzParseTSP(f *testing.F) {
	f.Add([]byte("echo\x00hello"))
	f.Add([]byte("key\x00echo\x00\x00"))
	f.Add([]byte("0123456789abcdef0123456789abcdef"))
	f.Add([]byte("svc\x00done\x000123456789abcdef0123456789abcdef\x0010"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		frames := bytes.Split(in, []byte{0})
		for _, keyed := range []bool{false, true} {
			if r, err := parseSubmit(frames, keyed); err == nil {
				if r.service == "" || len(r.body) == 0 || (keyed && r.idemKey == "") || !utf8.ValidString(r.service) {
					t.Fatalf("accepted a bad submit: %+v", r)
				}
			}
		}
		if id, err := parseTicket(frames); err == nil && id.IsZero() && len(frames[0]) != 32 && len(frames[0]) != 36 {
			t.Fatalf("accepted ticket %q", frames[0])
		}
		if f, err := parseList(frames); err == nil && (f.Limit < 1 || f.Limit > MaxListLimit) {
			t.Fatalf("list limit %d out of range", f.Limit)
		}
		checkSubmit2(t, frames)
	})
}

// A service name is text: it ends up in logs, metrics labels and JSON.
func TestSubmitServiceNotUTF8(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		frames := [][]byte{[]byte("ec\xffho"), []byte("body")}
		if keyed {
			frames = append([][]byte{[]byte("k1")}, frames...)
		}
		if r, err := parseSubmit(frames, keyed); err == nil {
			t.Errorf("keyed=%v: accepted service %q", keyed, r.service)
		}
	}
}

// checkSubmit2 holds titanic.submit2's parse (and so the options') to its
// bounds: an accepted request is a valid submit whose times are within
// reach and consistent.
func checkSubmit2(t *testing.T, frames [][]byte) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	r, err := parseSubmit2(frames, now)
	if err != nil {
		if !errors.Is(err, errBadRequest) {
			t.Fatalf("submit2 refused without a bad request: %v", err)
		}
		return
	}
	lc := r.lifecycle
	far := now.Add(MaxScheduleAhead)
	switch {
	case r.service == "" || len(r.body) == 0 || !utf8.ValidString(r.service) || len(r.idemKey) > MaxIdemKey:
		t.Fatalf("accepted a bad submit2: %+v", r)
	case !lc.Due.IsZero() && (!lc.Due.After(now) || lc.Due.After(far)):
		t.Fatalf("due %v out of range", lc.Due)
	case !lc.Deadline.IsZero() && (!lc.Deadline.After(now) || lc.Deadline.After(far)):
		t.Fatalf("deadline %v out of range", lc.Deadline)
	case !lc.Deadline.IsZero() && !lc.Due.IsZero() && !lc.Deadline.After(lc.Due):
		t.Fatalf("deadline %v not after due %v", lc.Deadline, lc.Due)
	case lc.Priority < store.PriorityLow || lc.Priority > store.PriorityHigh:
		t.Fatalf("priority %d", lc.Priority)
	case lc.Retry.MaxAttempts < 0 || lc.Retry.MaxAttempts > MaxSubmitAttempts:
		t.Fatalf("attempts %d", lc.Retry.MaxAttempts)
	case lc.Retry.Base < 0 || lc.Retry.Base > MaxBackoff || lc.Retry.Max < 0 || lc.Retry.Max > MaxBackoff:
		t.Fatalf("backoff %v", lc.Retry)
	case lc.Retry.Max != 0 && lc.Retry.Max < lc.Retry.Base:
		t.Fatalf("backoff max below base: %v", lc.Retry)
	}
}

// Every refusal the service sends reads back, through the parser the
// client uses, as the kind the client acts on, and keeps the bytes that
// the first release's clients compare.
func TestRefusalKinds(t *testing.T) {
	svcErr := fmt.Errorf("wrapped: %w", store.ErrClusterVersion)
	for _, tc := range []struct {
		name string
		rep  [][]byte
		code string
		kind tsp.Kind
	}{
		{"not active", Refusal(tsp.SvcReply), tsp.CodeError, tsp.NotActive},
		{"not merged", replyText(tsp.CodeError, NotMerged), tsp.CodeError, tsp.NotReady},
		{"busy", busyReply(), tsp.CodeError, tsp.Busy},
		{"unknown service", replyText(tsp.CodeUnknown, tsp.UnknownServiceText("titanic.nope")), tsp.CodeUnknown, tsp.UnknownService},
		{"unknown ticket", lifecycleAnswer("retry", store.ErrNotFound), tsp.CodeUnknown, tsp.UnknownTicket},
		{"not failed", lifecycleAnswer("retry", store.ErrNotFailed), tsp.CodeUnknown, tsp.NotFailed},
		{"finished", lifecycleAnswer("cancel", store.ErrFinal), tsp.CodeUnknown, tsp.Finished},
		{"not supported", lifecycleAnswer("retry", svcErr), tsp.CodeUnknown, tsp.NotSupported},
		{"bad request", lifecycleAnswer("pause", badRequest("no service")), tsp.CodeUnknown, tsp.BadRequest},
		{"key conflict", replyText(tsp.CodeUnknown, keyConflictText(&store.KeyConflictError{Service: "echo"})), tsp.CodeUnknown, tsp.KeyConflict},
		{"outcome unknown", submitRefusal(fmt.Errorf("commit: %w", replica.ErrUncertain)), tsp.CodeError, tsp.Uncertain},
	} {
		if !tsp.Is(tc.rep, tc.code, tc.kind) {
			a := tsp.ParseAnswer(tc.rep)
			t.Errorf("%s: %q reads as %s %q, want %s %q", tc.name, tc.rep, a.Code, a.Kind, tc.code, tc.kind)
		}
	}
	if a := tsp.ParseAnswer(submitRefusal(errors.New("disk on fire"))); a.Code != tsp.CodeError || a.Kind != tsp.None {
		t.Fatalf("a storage error reads as %s %q, want 500 of no kind (retry later)", a.Code, a.Kind)
	}
	// The first release's client compares the gate's refusal byte for
	// byte, and refusals are only for titanic.* services.
	if r := Refusal(tsp.SvcSubmit); len(r) != 2 || string(r[1]) != "not active" {
		t.Fatalf("Refusal = %q, want [500 | not active]", r)
	}
	if r := Refusal("echo"); r != nil {
		t.Fatalf("Refusal of a plain service = %q, want nil (dropped)", r)
	}
}

// Every name tsp.Served lists (what mmi.service answers 200 for) is
// served, not refused as unknown; a name it does not list is refused.
func TestServedNamesAreServed(t *testing.T) {
	h := newHarness(t, Config{}, "")
	for _, name := range []string{tsp.SvcRequest, tsp.SvcReply, tsp.SvcClose, tsp.SvcSubmit, tsp.SvcSubmit2, tsp.SvcStatus,
		tsp.SvcList, tsp.SvcWait, tsp.SvcBackup, tsp.SvcHello, tsp.SvcBye, tsp.SvcClients, tsp.SvcStats, tsp.SvcRetry,
		tsp.SvcCancel, tsp.SvcPause, tsp.SvcResume, tsp.SvcAttempts, tsp.SvcPurge} {
		if !h.svc.Serves(name) {
			t.Errorf("Serves(%q) = false", name)
		}
		r := h.svc.ServeMDP(broker.Request{Service: name, Body: [][]byte{{}}})
		if len(r) > 1 && string(r[1]) == tsp.UnknownServiceText(name) {
			t.Errorf("%s listed as served, answered %q", name, r)
		}
	}
	if h.svc.Serves("titanic.bogus") || h.svc.Serves(tsp.SvcJoin) {
		t.Error("Serves says yes to a name the service refuses")
	}
}
