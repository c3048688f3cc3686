package spec

import (
	"strings"
	"testing"
	"time"
)

// TestReadyForLongServiceNameAnswered: 7/MDP's service name is a printable
// string of any length. The broker refuses names over 255 bytes
// (mdp.MaxServiceName, in README); it dropped such a READY in silence
// (logged at debug level only): the worker was neither registered nor
// told, and looped for ever without a word of why. Now it is sent
// DISCONNECT and the refusal is logged as a warning.
func TestReadyForLongServiceNameAnswered(t *testing.T) {
	ep, _ := startBroker(t, "--heartbeat", "5s")
	name := strings.Repeat("s", 256)
	w := newWorker(t, ep)
	w.cmd(0x01, name)
	// Registered (mmi.service says so), or refused with DISCONNECT at once.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if m := w.recv(100 * time.Millisecond); len(m) == 3 && m[2][0] == 0x05 {
			return
		}
		if got := tspCall(t, ep, "mmi.service", name); string(got[0]) == "200" {
			return
		}
	}
	t.Errorf("READY for a %d-byte service name: neither registered (mmi.service 404) nor answered DISCONNECT within 3s", len(name))
}
