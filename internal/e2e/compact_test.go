package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestCompactCommand: titanic compact refuses a data file a broker holds;
// on the stopped broker's file, most of whose tickets (large bodies) were
// closed, it writes a file at most half the size, which titanic check
// passes, keeps the old one as titanic.db.precompact, and the broker
// starts on it and serves the tickets that remained as they were.
func TestCompactCommand(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	data := t.TempDir()
	br := harness.Broker(t, "broker", ep, data, fastBroker...)
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	echoWorkers(t, ctx, ep, "echo", 2)

	body := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(body)
	type kept struct{ ticket, key, reply string }
	var keep []kept
	var closed []string
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		tk, err := cl.Submit(ctx, "echo", [][]byte{body, []byte(key)}, client.SubmitOptions{IdemKey: key})
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			keep = append(keep, kept{ticket: tk, key: key})
		} else {
			closed = append(closed, tk)
		}
	}
	for i := range keep {
		rep, err := cl.Reply(ctx, keep[i].ticket, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		keep[i].reply = string(rep[0])
	}
	for _, tk := range closed {
		if _, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil {
			t.Fatal(err)
		}
		if err := cl.CloseTicket(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}

	if out, errOut, code := cliStderr(t, "", "compact", "--data", data); code == 0 || !strings.Contains(errOut, "stop it first") {
		t.Fatalf("compact beside a running broker: exit %d\n%s%s", code, out, errOut)
	}
	if err := br.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, "titanic.db")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cliStderr(t, "", "compact", "--data", data)
	if code != 0 || !strings.Contains(out, "compacted and checked") {
		t.Fatalf("compact: exit %d\n%s%s", code, out, errOut)
	}
	t.Log(strings.TrimSpace(out))
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size()*2 > before.Size() {
		t.Fatalf("data file %d bytes after compaction, %d before: want at most half", after.Size(), before.Size())
	}
	if old, err := os.Stat(path + ".precompact"); err != nil || old.Size() != before.Size() {
		t.Fatalf("old file not kept as titanic.db.precompact: %v", err)
	}
	if out, code := cli(t, "", "check", "--data", data); code != 0 || !strings.Contains(out, "ok, 20 tickets") {
		t.Fatalf("check after compaction: exit %d\n%s", code, out)
	}

	harness.Broker(t, "broker2", ep, data, fastBroker...)
	for _, k := range keep {
		st, err := cl.Status(ctx, k.ticket)
		if err != nil || st.State != "done" {
			t.Fatalf("ticket %s after compaction: %+v %v", k.ticket, st, err)
		}
		rep, err := cl.Reply(ctx, k.ticket, client.ReplyOptions{})
		if err != nil || !strings.HasSuffix(string(rep[0]), k.key) || len(rep[0]) != len("echo:")+len(body)+len(k.key) ||
			!strings.Contains(string(rep[0]), string(body)) {
			t.Fatalf("reply of %s changed after compaction: %d bytes, %v", k.ticket, len(rep[0]), err)
		}
		// The key still names the ticket.
		tk, err := cl.Submit(ctx, "echo", [][]byte{body, []byte(k.key)}, client.SubmitOptions{IdemKey: k.key})
		if err != nil || tk != k.ticket {
			t.Fatalf("resubmit of key %s after compaction: %s %v, want %s", k.key, tk, err, k.ticket)
		}
	}
	for _, tk := range closed[:5] {
		if _, err := cl.Status(ctx, tk); err == nil {
			t.Fatalf("closed ticket %s back after compaction", tk)
		}
	}
	// And it serves new work.
	tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte("new")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "echo:new" {
		t.Fatalf("new ticket after compaction: %q %v", rep, err)
	}
}
