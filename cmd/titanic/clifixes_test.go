package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A worker of a reserved service is refused at once, before it dials: the
// broker would refuse its READY and it would reconnect forever.
func TestWorkerRefusesReservedServices(t *testing.T) {
	for _, svc := range []string{"mmi.x", "titanic.request", "titanic.x"} {
		start := time.Now()
		code, _, stderr := runCLI(t, context.Background(), "worker", "--broker", "tcp://127.0.0.1:1", svc, "--", "cat")
		if code != exitError || time.Since(start) > 5*time.Second ||
			!strings.Contains(stderr, `the "mmi." and "titanic." services are reserved`) {
			t.Errorf("worker %s -- cat: exit %d after %s, stderr %q; want %d at once naming both reserved prefixes",
				svc, code, time.Since(start), stderr, exitError)
		}
	}
}
