package broker

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestUnreadClients: a client whose answer could not be queued (its pipe
// is full) is flagged Unread on its next requests until an answer to it
// goes through, or until it has not failed for two ages; the set is
// bounded.
func TestUnreadClients(t *testing.T) {
	f := newFixture(t, false)
	var got []bool
	f.s.handlers = []prefixHandler{{prefix: "titanic.", h: handlerFunc(func(r Request) [][]byte {
		got = append(got, r.Unread)
		return [][]byte{[]byte("500"), []byte("busy")}
	})}}
	now := time.Unix(1000, 0)
	f.s.tick(now)
	req := func(id string) bool {
		got = nil
		f.s.receive(now, [][]byte{[]byte(id), {}, []byte("MDPC01"), []byte("titanic.request"), []byte("echo"), []byte("x")})
		if len(got) != 1 {
			t.Fatalf("handler called %d times", len(got))
		}
		return got[0]
	}
	if req("C") {
		t.Fatal("a client never refused an answer is flagged")
	}
	f.rec.fail["C"] = errWouldBlock
	if req("C") {
		t.Fatal("flagged before an answer was dropped")
	}
	for range 2 {
		if !req("C") {
			t.Fatal("a client whose answers are dropped is not flagged")
		}
	}
	if req("D") {
		t.Fatal("another client is flagged")
	}
	// It reads again: the refusal goes through, and the next request is
	// served as any.
	delete(f.rec.fail, "C")
	if !req("C") {
		t.Fatal("flag lost before an answer went through")
	}
	if req("C") {
		t.Fatal("still flagged after an answer went through")
	}
	// Gone for good: forgotten after two ages without a failed send.
	f.rec.fail["C"] = errWouldBlock
	req("C")
	f.s.tick(now.Add(unreadAge))
	if !f.s.isUnread("C") {
		t.Fatal("forgotten after one age")
	}
	f.s.tick(now.Add(2 * unreadAge))
	if f.s.isUnread("C") {
		t.Fatal("remembered after two ages")
	}
	// Bounded.
	for i := range maxUnread + 10 {
		f.s.noteSend(string(rune(i)), errWouldBlock)
	}
	if n := len(f.s.unread.cur) + len(f.s.unread.old); n > maxUnread {
		t.Fatalf("%d clients tracked, bound %d", n, maxUnread)
	}
}

// BenchmarkRefusedFlood is the broker loop's cost for one message of a
// flood it refuses (the handler answers at once) to a client that does
// not read (every answer to it is dropped: its pipe is full), without the
// receive itself.
func BenchmarkRefusedFlood(b *testing.B) {
	refusal := [][]byte{[]byte("500"), []byte("busy, retry later: over 2000 submits/s")}
	s := newState(testConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(string, [][]byte) error { return errWouldBlock }, nil,
		[]prefixHandler{{prefix: "titanic.", h: handlerFunc(func(Request) [][]byte { return refusal })}})
	now := time.Now()
	msg := [][]byte{[]byte("\x00k\x8bEg"), {}, []byte("MDPC01"), []byte("titanic.request"), []byte("echo"), []byte("flood 12345")}
	b.ReportAllocs()
	for b.Loop() {
		s.receive(now, msg)
	}
}
