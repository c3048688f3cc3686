package broker_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
)

// TestFrameCountBomb: a client request of 100,000 empty frames (each
// within ZMQ_MAXMSGSIZE, which bounds frames, not their number) is
// refused and counted, never reaches the worker, does not make the
// broker's heap hold it, and the broker keeps serving the next request.
func TestFrameCountBomb(t *testing.T) {
	const bomb = 100_000
	cfg := testConfig(t)
	// The raw test worker does not heartbeat: reading and dropping the
	// bomb takes the broker loop a few hundred ms under -race, longer
	// than the default test liveness (150 ms) would let it live.
	cfg.HeartbeatInterval = time.Second
	e := start(t, cfg, nil)
	w := e.worker("W", "echo")
	e.waitWorkers("echo", 1)
	c := e.dealer("C")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	msg := make([]string, 0, bomb+4)
	msg = append(msg, "", hdrClient, "echo", "bomb")
	for len(msg) < cap(msg) {
		msg = append(msg, "")
	}
	c.send(msg...)
	msg = nil
	e.waitStats("the bomb refused", func(s broker.Stats) bool { return s.TooManyFrames == 1 })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Kept, the message would be 100,000 slice headers (2.4 MB) at least.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Errorf("heap grew by %d bytes after the refused message", grew)
	}

	c.send("", hdrClient, "echo", "fine")
	client, body := w.request()
	if len(body) != 1 || body[0] != "fine" {
		t.Fatalf("worker got %q (client %q), want the well-formed request only", body, client)
	}
	w.reply(client, "ok")
	c.expect("", hdrClient, "echo", "ok")
	st := e.stats()
	if st.Requests != 1 || st.RequestsDispatched != 1 || st.TooManyFrames != 1 {
		t.Fatalf("counters %+v: want one request served and one refused", st.Counters)
	}
}
