package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/worker"
)

// TestShardedQueues is the sharded-queues must-show, through the built
// binary: three independent brokers (shards); 3,000 keyed submits spread
// over them within ±15% of even, each on its key's home shard; one shard
// SIGKILLed while unkeyed submits flow: they go on without an error on the
// other two, and lookups of the dead shard's tickets answer "shard
// unavailable", never "unknown ticket"; once it restarts on its data, a
// worker serving the three clusters at once answers every acknowledged
// ticket with its own body.
func TestShardedQueues(t *testing.T) {
	type shard struct {
		ep, dir string
		p       *harness.Process
	}
	flags := append([]string{"--http-listen="}, fastBroker...)
	shards := make([]*shard, 3)
	for i := range shards {
		sh := &shard{ep: harness.FreeEndpoint(t), dir: t.TempDir()}
		sh.p = harness.Broker(t, fmt.Sprintf("shard%d", i), sh.ep, sh.dir, flags...)
		shards[i] = sh
	}
	tails := func() string {
		var b bytes.Buffer
		for i, sh := range shards {
			fmt.Fprintf(&b, "--- shard %d log:\n%s\n", i, sh.p.Tail())
		}
		return b.String()
	}
	// A dead shard costs a submit one round of tries (timeout × retries)
	// before it moves on; the readers at the end are patient instead.
	newSharded := func(timeout time.Duration, retries int) *client.Sharded {
		var cfgs []client.Config
		for _, sh := range shards {
			cfgs = append(cfgs, client.Config{Brokers: []string{sh.ep}, Timeout: timeout, Retries: retries})
		}
		s, err := client.NewSharded(cfgs, client.WithProbeInterval(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 3,000 keyed submits from 8 clients.
	const n, submitters = 3000, 8
	keyed := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, submitters)
	var home *client.Sharded
	for g := range submitters {
		s := newSharded(time.Second, 5)
		if g == 0 {
			home = s
		}
		wg.Go(func() {
			for i := g; i < n; i += submitters {
				tk, err := s.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "keyed %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("key-%d", i)})
				if err != nil {
					errs <- fmt.Errorf("keyed submit %d: %w", i, err)
					return
				}
				keyed[i] = tk
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\n%s", err, tails())
	}
	counts := make([]int, len(shards))
	for i, tk := range keyed {
		sh, _, err := client.ParseShardTicket(tk)
		if err != nil {
			t.Fatal(err)
		}
		if want := home.ShardFor(fmt.Sprintf("key-%d", i)); sh != want {
			t.Fatalf("key-%d stored on shard %d, its home is %d", i, sh, want)
		}
		counts[sh]++
	}
	t.Logf("3000 keyed submits over 3 shards: %v (even: 1000, allowed 850..1150)", counts)
	for i, c := range counts {
		if c < 850 || c > 1150 {
			t.Errorf("shard %d got %d of %d keyed submits, want within ±15%% of %d", i, c, n, n/3)
		}
	}

	// Unkeyed submits flow while shard 1 is SIGKILLed.
	type ack struct{ ticket, body string }
	var (
		mu      sync.Mutex
		acks    []ack
		afterOn = map[int]int{}
		killed  atomic.Bool
		stop    atomic.Bool
		count   atomic.Int64
		fail    = make(chan error, 4)
	)
	for g := range 4 {
		s := newSharded(500*time.Millisecond, 2)
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				body := fmt.Sprintf("unkeyed %d-%d", g, i)
				wasKilled := killed.Load()
				tk, err := s.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{})
				if err != nil {
					fail <- fmt.Errorf("unkeyed submit %s (shard 1 killed: %v): %w", body, killed.Load(), err)
					return
				}
				sh, _, _ := client.ParseShardTicket(tk)
				mu.Lock()
				acks = append(acks, ack{tk, body})
				if wasKilled {
					afterOn[sh]++
				}
				mu.Unlock()
				count.Add(1)
			}
		})
	}
	waitFor := func(target int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for count.Load() < target {
			select {
			case err := <-fail:
				t.Fatalf("%v\n%s", err, tails())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d unkeyed submits within 30s\n%s", count.Load(), target, tails())
			}
		}
	}
	waitFor(150)
	shards[1].p.Signal(syscall.SIGKILL)
	shards[1].p.Kill()
	killed.Store(true)
	killedAt := time.Now()
	waitFor(count.Load() + 600)
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-fail:
		t.Fatalf("%v\n%s", err, tails())
	default:
	}
	t.Logf("%d unkeyed submits acknowledged, none failed; begun after the kill, by shard: %v (%s after the kill)",
		len(acks), afterOn, time.Since(killedAt).Round(time.Millisecond))
	if afterOn[1] != 0 {
		t.Errorf("%d submits begun after the kill were acknowledged by the dead shard", afterOn[1])
	}
	if afterOn[0] < 100 || afterOn[2] < 100 {
		t.Errorf("submits after the kill by shard: %v, want both live shards used", afterOn)
	}

	// Lookups of the dead shard's tickets: shard unavailable, not unknown.
	look := newSharded(500*time.Millisecond, 2)
	var dead, live []string
	for _, tk := range keyed {
		if sh, _, _ := client.ParseShardTicket(tk); sh == 1 {
			dead = append(dead, tk)
		} else {
			live = append(live, tk)
		}
	}
	for _, tk := range dead[:3] {
		_, err := look.Status(ctx, tk)
		if !errors.Is(err, client.ErrShardUnavailable) || errors.Is(err, client.ErrUnknown) {
			t.Fatalf("status of %s on the killed shard = %v, want ErrShardUnavailable", tk, err)
		}
	}
	if _, err := look.Status(ctx, live[0]); err != nil {
		t.Fatalf("status of %s on a live shard: %v", live[0], err)
	}

	// Restart the shard on its data; one worker serves the three clusters.
	shards[1].p = harness.Broker(t, "shard1-restarted", shards[1].ep, shards[1].dir, flags...)
	var clusters [][]string
	for _, sh := range shards {
		clusters = append(clusters, []string{sh.ep})
	}
	m, err := worker.NewMulti(clusters, worker.Config{Service: "echo", HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond},
		func(_ context.Context, req [][]byte) ([][]byte, error) {
			return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); _ = m.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()

	all := make([]ack, 0, n+len(acks))
	for i, tk := range keyed {
		all = append(all, ack{tk, fmt.Sprintf("keyed %d", i)})
	}
	all = append(all, acks...)
	// Eight readers, each with its own client.
	next := atomic.Int64{}
	rerrs := make(chan error, 8)
	for range 8 {
		s := newSharded(time.Second, 10)
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(all) {
					return
				}
				a := all[k]
				rep, err := s.Reply(ctx, a.ticket, client.ReplyOptions{Wait: true})
				if err != nil {
					rerrs <- fmt.Errorf("acknowledged ticket %s (%s) not answered: %w", a.ticket, a.body, err)
					return
				}
				if got := string(bytes.Join(rep, nil)); got != "echo:"+a.body {
					rerrs <- fmt.Errorf("ticket %s answered %q, want %q", a.ticket, got, "echo:"+a.body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(rerrs)
	for err := range rerrs {
		t.Fatalf("%v\n%s", err, tails())
	}
	st := m.ClusterStats(1)
	t.Logf("%d acknowledged tickets answered; the restarted shard's worker session answered %d", len(all), st.Replies)
	if st.Replies < uint64(counts[1]) {
		t.Errorf("the restarted shard's session answered %d jobs, want at least its %d keyed tickets", st.Replies, counts[1])
	}
}
