package broker

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/titanicmq/titanic/broker/mdp"
)

// The messages the state builds in its reused buffers are the frames of
// the mdp encoders, message after message.
func TestReusedMessagesAreMDP(t *testing.T) {
	s := newState(testConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil, nil)
	for _, c := range []struct {
		service string
		body    [][]byte
	}{
		{"titanic.request", [][]byte{[]byte("200"), []byte("0190abcd")}},
		{"echo", [][]byte{{}}},
		{"a-much-longer-service-name", [][]byte{[]byte("x"), {}, []byte("yz"), []byte("last")}},
		{"s", [][]byte{[]byte("one")}},
	} {
		if got, want := s.clientReply(c.service, c.body), mdp.ClientReply(c.service, c.body...); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("clientReply(%q) = %q, want %q", c.service, got, want)
		}
		s.sent()
		token := []byte("lease-" + c.service)
		if got, want := s.workerRequest(token, c.body), mdp.WorkerEnvelope(mdp.Request, token, c.body...); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("workerRequest(%q) = %q, want %q", token, got, want)
		}
		s.sent()
	}
}
