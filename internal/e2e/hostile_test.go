package e2e

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestHostileClients runs hostile clients against a real broker and checks
// that a well-behaved client's submits are still acknowledged throughout,
// and that the broker's memory stays bounded: oversized frames, a
// pipelined flood from one connection, thousands of connections, clients
// that never read their answers, and garbage frames from the fuzz corpus.
func TestHostileClients(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--max-message-size", "1048576", "--submit-rate", "2000"}, fastBroker...)...)
	// A well-behaved client submits throughout; each submit must be
	// acknowledged within its Lazy Pirate retries.
	good, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 2 * time.Second, Retries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked int
	var goodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.Submit(ctx, "good", [][]byte{[]byte("ok")}, client.SubmitOptions{}); err != nil {
				goodErr = err
				return
			}
			acked++
		}
	}()

	// The storm: oversized frames, a flood from one connection, 2,000
	// connections that never read, fuzz garbage, a frame-count bomb.
	closeAll, err := harness.Hostile(context.Background(), ep, filepath.Join("..", "..", "broker", "mdp", "testdata", "fuzz"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()

	// Keep the good client going a while after the storm.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && goodErr == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if goodErr != nil {
		t.Fatalf("well-behaved client failed during the attack: %v\nbroker log:\n%s", goodErr, br.Tail())
	}
	if acked < 50 {
		t.Fatalf("well-behaved client got only %d acks", acked)
	}
	if br.Exited() {
		t.Fatalf("broker died:\n%s", br.Tail())
	}
	rss := peakRSS(t, br.PID())
	t.Logf("well-behaved client: %d submits acknowledged during the attack; broker peak RSS %d MiB", acked, rss>>20)
	if rss > 1<<30 {
		t.Fatalf("broker peak RSS %d MiB: memory not bounded", rss>>20)
	}
}

// peakRSS reads VmHWM (peak resident set) of pid.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	v, err := harness.ProcStatus(pid, "VmHWM")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.Skipf("no /proc: %v", err)
	case err != nil:
		t.Fatal(err)
	}
	return v
}
