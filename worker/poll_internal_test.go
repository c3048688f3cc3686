package worker

import (
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
)

// waitModes are the two ways a slot waits for its DEALER: in Go's poller
// (zsock.Readable), or in zmq_poll with the doorbell, the fallback for a
// descriptor Go's poller cannot watch.
var waitModes = []struct {
	name     string
	pollOnly bool
}{{"readable", false}, {"zmq_poll", true}}

// A handler's result and ctx's end wake the slot at once, in either wait
// mode, before and after a reconnect (a new socket, so a new Readable),
// and while disconnected: the heartbeat interval is far longer than any
// wait of the test, so no timer gets the slot to look instead.
func TestRingsWakeTheSlot(t *testing.T) {
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			a, b := newFakeBroker(t), newFakeBroker(t)
			started, release := make(chan struct{}, 1), make(chan struct{}, 1)
			r := startWorkerWith(t, Config{Brokers: []string{a.ep, b.ep}, HeartbeatInterval: time.Minute, Liveness: 10},
				func(_ context.Context, req [][]byte) ([][]byte, error) {
					if string(req[0]) == "slow" {
						started <- struct{}{}
						<-release
					}
					return req, nil
				}, func(w *Worker) { w.pollOnly = mode.pollOnly })
			handled := func(what string) {
				t.Helper()
				select {
				case <-started:
				case <-time.After(wait):
					t.Fatalf("%s: handler not called within %s", what, wait)
				}
				release <- struct{}{}
			}
			idA, _, _ := a.expect(mdp.Ready, "connect to a")

			a.request(idA, []byte("c1"), []byte("slow"))
			handled("first request")
			if _, frames, _ := a.expect(mdp.Reply, "slow request"); string(frames[3]) != "c1" || string(frames[5]) != "slow" {
				t.Fatalf("REPLY %q, want client c1 and body slow", frames)
			}

			// Lost while busy: the slot waits with no DEALER until the
			// handler rings, then connects to b.
			a.request(idA, []byte("c2"), []byte("slow"))
			select {
			case <-started:
			case <-time.After(wait):
				t.Fatalf("second request: handler not called within %s", wait)
			}
			a.send(idA, mdp.WorkerCommand(mdp.Disconnect)...)
			b.expectNothing("while the handler of a lost connection runs")
			release <- struct{}{}
			idB, _, _ := b.expect(mdp.Ready, "once the handler returned")

			b.request(idB, []byte("c3"), []byte("slow"))
			handled("request after reconnect")
			if _, frames, _ := b.expect(mdp.Reply, "request after reconnect"); string(frames[3]) != "c3" || string(frames[5]) != "slow" {
				t.Fatalf("REPLY %q, want client c3 and body slow", frames)
			}

			took, err := r.shutdown()
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if took > 2*time.Second {
				t.Errorf("Run took %s to return after cancel", took)
			}
			b.expect(mdp.Disconnect, "after cancel")
			if st := r.w.Stats(); st.Replies != 2 || st.Discarded != 1 || st.Reconnects != 1 || st.Disconnects != 1 {
				t.Errorf("stats %+v, want 2 replies, 1 discarded, 1 reconnect, 1 disconnect", st)
			}
		})
	}
}
