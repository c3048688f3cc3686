package titanic

import (
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// TestRefuseUnread: a submit from a client the broker cannot answer (its
// pipe is full) is refused with busy before it costs a commit or a token;
// a malformed one still gets its 400; other requests are served; and the
// same client is served once it reads again.
func TestRefuseUnread(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "t.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := New(st, newFakeBroker(), Config{MaxQueuedOps: 1, SubmitRate: 1, SubmitBurst: 1})
	c := broker.Client{}
	body := [][]byte{[]byte("s"), []byte("x")}
	for _, name := range []string{tsp.SvcRequest, tsp.SvcSubmit2} {
		b := body
		if name == tsp.SvcSubmit2 {
			b = [][]byte{{}, {}, []byte("s"), []byte("x")}
		}
		r := svc.ServeMDP(broker.Request{Client: c, Service: name, Body: b, Unread: true})
		if codeOf(r) != tsp.CodeError || string(r[1]) != "busy, retry later: answers not read" {
			t.Fatalf("%s from an unread client = %q, want 500 busy", name, r)
		}
	}
	if r := svc.ServeMDP(broker.Request{Client: c, Service: tsp.SvcRequest, Body: body[:1], Unread: true}); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("malformed submit from an unread client = %q, want 400", r)
	}
	if r := svc.ServeMDP(broker.Request{Client: c, Service: tsp.SvcClose, Body: [][]byte{[]byte("nonsense")}, Unread: true}); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close from an unread client = %q, want 200", r)
	}
	// Neither a token (burst 1) nor a queue slot (1) was taken.
	if r := svc.ServeMDP(broker.Request{Client: c, Service: tsp.SvcRequest, Body: body}); r != nil {
		t.Fatalf("submit once the client reads = %q, want it handed to the store", r)
	}
	if n := svc.stats.busy.Load(); n != 2 {
		t.Fatalf("busy counted %d, want 2", n)
	}
}
