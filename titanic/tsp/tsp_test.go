package tsp_test

import (
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// The tokens are bytes on the wire that released clients compare: the
// first release matches "not active" exactly, "not ready" and "failed: "
// as prefixes, "unknown ticket" exactly and "unknown titanic service"
// anywhere. A change here breaks them, whatever the tests of this
// release say.
func TestTokensAreTheWiresBytes(t *testing.T) {
	for k, want := range map[tsp.Kind]string{
		tsp.NotActive:      "not active",
		tsp.NotReady:       "not ready",
		tsp.Busy:           "busy, retry later",
		tsp.Failed:         "failed",
		tsp.UnknownTicket:  "unknown ticket",
		tsp.UnknownService: "unknown titanic service",
		tsp.NotSupported:   "not supported",
		tsp.KeyConflict:    "key conflict",
		tsp.BadRequest:     "bad request",
		tsp.NotFailed:      "not failed",
		tsp.Finished:       "finished",
		tsp.Uncertain:      "outcome unknown",
		tsp.Forbidden:      "forbidden",
	} {
		if string(k) != want {
			t.Errorf("kind %q, want %q", k, want)
		}
	}
	for got, want := range map[string]string{
		tsp.CodeOK: "200", tsp.CodePending: "300", tsp.CodeUnknown: "400", tsp.CodeError: "500",
		tsp.Failed.Text("boom"):               "failed: boom",
		tsp.Failed.Text(""):                   "failed: ",
		tsp.UnknownServiceText("titanic.foo"): `unknown titanic service "titanic.foo"`,
		tsp.SvcRequest:                        "titanic.request",
		tsp.SvcReply:                          "titanic.reply",
		tsp.SvcClose:                          "titanic.close",
		tsp.SvcRole:                           "titanic.cluster.role",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		text   string
		kind   tsp.Kind
		detail string
	}{
		// What brokers of every release send.
		{"not active", tsp.NotActive, ""},
		{"not active: waiting for the peer b at tcp://h:5555 to be in sync once", tsp.NotActive, "waiting for the peer b at tcp://h:5555 to be in sync once"},
		{"not ready: taking over, retry", tsp.NotReady, "taking over, retry"},
		{"not ready: this ticket may be held by the peer", tsp.NotReady, "this ticket may be held by the peer"},
		{"busy, retry later", tsp.Busy, ""},
		{"busy, retry later: 1000 requests in flight", tsp.Busy, "1000 requests in flight"},
		{"failed: worker exited 1: no such file", tsp.Failed, "worker exited 1: no such file"},
		{"failed: cancelled: by operator", tsp.Failed, "cancelled: by operator"},
		{"failed: ", tsp.Failed, ""},
		{"unknown ticket", tsp.UnknownTicket, ""},
		{`unknown titanic service "titanic.stats"`, tsp.UnknownService, `"titanic.stats"`},
		{`unknown titanic service "titanic.a:b"`, tsp.UnknownService, `"titanic.a:b"`},
		{"not supported: cluster version 2, needs 3", tsp.NotSupported, "cluster version 2, needs 3"},
		{"key conflict: 0123456789abcdef0123456789abcdef: another body", tsp.KeyConflict, "0123456789abcdef0123456789abcdef: another body"},
		{"bad request: empty service name", tsp.BadRequest, "empty service name"},
		{"not failed: retry: only a failed ticket can be retried", tsp.NotFailed, "retry: only a failed ticket can be retried"},
		{"finished: cancel: the ticket is finished already", tsp.Finished, "cancel: the ticket is finished already"},
		// Texts of no kind: sentences that merely contain a token.
		{"retry not recorded: disk full", tsp.None, "retry not recorded: disk full"},
		{"failed to write: disk full", tsp.None, "failed to write: disk full"},
		{"not activated", tsp.None, "not activated"},
		{"the node is not active", tsp.None, "the node is not active"},
		{"", tsp.None, ""},
	} {
		k, d := tsp.KindOf(tc.text)
		if k != tc.kind || d != tc.detail {
			t.Errorf("KindOf(%q) = %q, %q; want %q, %q", tc.text, k, d, tc.kind, tc.detail)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	fr := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, x := range s {
			out[i] = []byte(x)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   [][]byte
		want tsp.Answer
	}{
		{"ticket", fr("200", "0123456789abcdef0123456789abcdef"), tsp.Answer{Code: "200"}},
		{"pending", fr("300", "pending"), tsp.Answer{Code: "300"}},
		{"refusal", fr("500", "not active"), tsp.Answer{Code: "500", Kind: tsp.NotActive, Text: "not active"}},
		{"keyed", fr("400", "key conflict: t: x", "k1"), tsp.Answer{Code: "400", Kind: tsp.KeyConflict, Detail: "t: x", Text: "key conflict: t: x"}},
		{"text in the status frame (9/TSP allows it)", fr("500 failed: boom"), tsp.Answer{Code: "500", Kind: tsp.Failed, Detail: "boom", Text: "failed: boom"}},
		{"bare code", fr("400"), tsp.Answer{Code: "400"}},
		{"empty", nil, tsp.Answer{}},
	} {
		if got := tsp.ParseAnswer(tc.in); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if !tsp.Is(fr("500", "not ready: x"), tsp.CodeError, tsp.NotReady) || tsp.Is(fr("400", "not ready: x"), tsp.CodeError, tsp.NotReady) ||
		tsp.Is(fr("500", "x"), tsp.CodeError, tsp.None) {
		t.Fatal("Is: wrong code or kind matched")
	}
}

// Every kind's text reads back as that kind, with its detail.
func TestTextRoundTrip(t *testing.T) {
	for _, k := range []tsp.Kind{tsp.NotActive, tsp.NotReady, tsp.Busy, tsp.Failed, tsp.UnknownTicket, tsp.UnknownService,
		tsp.NotSupported, tsp.KeyConflict, tsp.BadRequest, tsp.NotFailed, tsp.Finished, tsp.Uncertain, tsp.Forbidden} {
		for _, text := range []string{string(k), k.Text("some: detail")} {
			got, d := tsp.KindOf(text)
			if got != k || (text != string(k) && d != "some: detail") {
				t.Errorf("KindOf(%q) = %q, %q", text, got, d)
			}
		}
	}
}
