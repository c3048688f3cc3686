package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/titanic/tsp"
	"github.com/titanicmq/titanic/worker"
)

// quiet drops the in-process workers' logs: failovers are expected here.
var quiet = slog.New(slog.DiscardHandler)

// workload runs the clients and the workers of a scenario and records
// what they do in h.
type workload struct {
	h       *History
	service string
	eps     []string // the nodes' client endpoints
	nodes   []string // the node of each endpoint
	timeout time.Duration

	mu    sync.Mutex
	acked []string // acknowledged tickets, for lookups

	wg sync.WaitGroup
}

func (w *workload) addAcked(ticket string) {
	w.mu.Lock()
	w.acked = append(w.acked, ticket)
	w.mu.Unlock()
}

// pick returns an acknowledged ticket: a recent one half of the time.
func (w *workload) pick(rng *rand.Rand) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.acked)
	if n == 0 {
		return "", false
	}
	if rng.IntN(2) == 0 {
		return w.acked[n-1-rng.IntN(min(n, 50))], true
	}
	return w.acked[rng.IntN(n)], true
}

// between returns a random duration in [0, d).
func between(rng *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rng.Int64N(int64(d)))
}

// pause waits a few milliseconds between a client's operations (a paced
// load leaves the two shared cores to the brokers), or until ctx ends.
func pause(ctx context.Context, rng *rand.Rand, lo, hi time.Duration) {
	t := time.NewTimer(lo + between(rng, hi-lo))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startClients starts, on one side's ZeroMQ context, the four clients of
// that side: keyed submits through the client library, keyed submits and
// unkeyed titanic.request in raw frames, and raw lookups. They stop when
// ctx ends; wait for them with w.wg.
func (w *workload) startClients(ctx context.Context, side string, zctx *zsock.Context, seed uint64) {
	run := func(name string, i uint64, fn func(ctx context.Context, proc string, zctx *zsock.Context, rng *rand.Rand)) {
		rng := rand.New(rand.NewPCG(seed, i))
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			fn(ctx, side+"-"+name, zctx, rng)
		}()
	}
	run("lib", 1, w.keyedLib)
	run("keyed", 2, w.keyedRaw)
	run("raw", 3, w.unkeyedRaw)
	run("lookup", 4, w.lookups)
}

// keyedLib submits keys (the body is the key) through the client
// library.
func (w *workload) keyedLib(ctx context.Context, proc string, zctx *zsock.Context, rng *rand.Rand) {
	tr := newTracker(w.eps, w.nodes)
	cl, err := client.New(client.Config{Brokers: w.eps, Timeout: w.timeout, Retries: 2, Logger: slog.New(tr), Context: zctx})
	if err != nil {
		w.h.Add(Op{Process: proc, Type: Fail, F: FSubmit, Err: err.Error()})
		return
	}
	defer cl.Close()
	submit := func(key string) (ok, rejected bool) {
		w.h.Add(Op{Process: proc, Type: Invoke, F: FSubmit, Key: key, Body: key})
		tk, err := cl.Submit(ctx, w.service, [][]byte{[]byte(key)}, client.SubmitOptions{IdemKey: key})
		op := Op{Process: proc, Type: OK, F: FSubmit, Key: key, Body: key, Ticket: tk, Node: tr.node()}
		switch {
		case err == nil:
			w.addAcked(tk)
		case errors.Is(err, client.ErrRejected):
			op.Type, op.Node, op.Err = Fail, "", err.Error()
		default:
			op.Type, op.Node, op.Err = Info, "", err.Error()
		}
		w.h.Add(op)
		return err == nil, errors.Is(err, client.ErrRejected)
	}
	keyed(ctx, proc, rng, submit)
}

// keyed submits keys "<proc>-<n>", each until submit says it is
// acknowledged (or gives up on it), and now and then an acknowledged key
// again: the answer must be the same ticket.
func keyed(ctx context.Context, proc string, rng *rand.Rand, submit func(key string) (ok, giveUp bool)) {
	var done []string
	for i := 0; ctx.Err() == nil; i++ {
		if len(done) > 0 && rng.IntN(20) == 0 {
			submit(done[rng.IntN(len(done))])
		}
		key := fmt.Sprintf("%s-%d", proc, i)
		for ctx.Err() == nil {
			ok, giveUp := submit(key)
			if ok {
				done = append(done, key)
			}
			if ok || giveUp {
				break
			}
			pause(ctx, rng, 10*time.Millisecond, 30*time.Millisecond)
		}
		pause(ctx, rng, 20*time.Millisecond, 60*time.Millisecond)
	}
}

// keyedRaw submits keys with titanic.submit in raw frames, moving to the
// other node on a 500 or a timeout.
func (w *workload) keyedRaw(ctx context.Context, proc string, zctx *zsock.Context, rng *rand.Rand) {
	c := newRawClient(zctx.ZMQ(), w.eps, w.nodes, w.timeout)
	defer c.Close()
	submit := func(key string) (ok, rejected bool) {
		w.h.Add(Op{Process: proc, Type: Invoke, F: FSubmit, Key: key, Body: key})
		rep, node, err := c.call(ctx, tsp.SvcSubmit, []byte(key), []byte(w.service), []byte(key))
		op := Op{Process: proc, F: FSubmit, Key: key, Body: key, Node: node}
		op.Type, op.Code, op.Err = answerType(rep, err)
		switch {
		case op.Type == OK && len(rep) >= 2:
			op.Ticket = string(rep[1])
			if len(rep) >= 3 {
				op.Value = string(rep[2]) // new or duplicate
			}
			w.addAcked(op.Ticket)
		case op.Type == OK:
			op.Type, op.Err = Fail, fmt.Sprintf("200 without a ticket: %q", rep)
		case op.Code == "500":
			c.Next()
		}
		if op.Type != OK {
			op.Node = ""
		}
		w.h.Add(op)
		return op.Type == OK, op.Code == "400"
	}
	keyed(ctx, proc, rng, submit)
}

// unkeyedRaw sends 9/TSP titanic.request in raw frames, without a key:
// each try has a body of its own ("<proc>-<n>.<try>"), so that the
// executions of every try can be told apart, and a try that went
// unanswered may have made a ticket nobody holds.
func (w *workload) unkeyedRaw(ctx context.Context, proc string, zctx *zsock.Context, rng *rand.Rand) {
	c := newRawClient(zctx.ZMQ(), w.eps, w.nodes, w.timeout)
	defer c.Close()
	for i := 0; ctx.Err() == nil; i++ {
		for try := 0; ctx.Err() == nil; try++ {
			body := fmt.Sprintf("%s-%d.%d", proc, i, try)
			w.h.Add(Op{Process: proc, Type: Invoke, F: FRequest, Body: body})
			rep, node, err := c.call(ctx, tsp.SvcRequest, []byte(w.service), []byte(body))
			op := Op{Process: proc, F: FRequest, Body: body}
			op.Type, op.Code, op.Err = answerType(rep, err)
			if op.Type == OK && len(rep) >= 2 {
				op.Ticket, op.Node = string(rep[1]), node
				w.addAcked(op.Ticket)
			} else if op.Type == OK {
				op.Type, op.Err = Fail, fmt.Sprintf("200 without a ticket: %q", rep)
			}
			w.h.Add(op)
			if op.Type == OK || op.Code == "400" {
				break
			}
			if op.Code == "500" {
				c.Next()
			}
			pause(ctx, rng, 10*time.Millisecond, 30*time.Millisecond)
		}
		pause(ctx, rng, 20*time.Millisecond, 60*time.Millisecond)
	}
}

// lookups asks titanic.reply for acknowledged tickets, recording every
// answer (200 with the reply, 300, 400, 500) with the node that gave it.
func (w *workload) lookups(ctx context.Context, proc string, zctx *zsock.Context, rng *rand.Rand) {
	c := newRawClient(zctx.ZMQ(), w.eps, w.nodes, w.timeout)
	defer c.Close()
	for ctx.Err() == nil {
		tk, ok := w.pick(rng)
		if ok {
			w.lookup(ctx, c, proc, tk, false)
		}
		pause(ctx, rng, 10*time.Millisecond, 30*time.Millisecond)
	}
}

// lookup asks c's current node for a ticket's reply once and records it;
// on a 500 (other than a failed ticket) it moves c to the next node.
func (w *workload) lookup(ctx context.Context, c *rawClient, proc, ticket string, final bool) Op {
	w.h.Add(Op{Process: proc, Type: Invoke, F: FLookup, Ticket: ticket, Final: final})
	rep, node, err := c.call(ctx, tsp.SvcReply, []byte(ticket))
	op := Op{Process: proc, F: FLookup, Ticket: ticket, Node: node, Final: final}
	if err != nil {
		op.Type, op.Node, op.Err = Info, "", err.Error()
		return w.h.Add(op)
	}
	op.Type = OK
	if len(rep) > 0 {
		op.Code, _, _ = strings.Cut(string(rep[0]), " ")
		op.Value = string(bytes.Join(rep[1:], nil))
	}
	if a := tsp.ParseAnswer(rep); a.Code == tsp.CodeError && a.Kind != tsp.Failed {
		c.Next()
	}
	return w.h.Add(op)
}

// answerType classifies a submit's answer: 200 is OK; a 500 refusal by a
// node that is not (yet) active, or a 400, is a Fail (nothing was
// stored); any other 500, and no answer, are Info: the request may have
// been stored.
func answerType(rep [][]byte, err error) (Type, string, string) {
	if err != nil {
		return Info, "", err.Error()
	}
	if len(rep) == 0 {
		return Info, "", "empty answer"
	}
	code, _, _ := strings.Cut(string(rep[0]), " ")
	text := ""
	if len(rep) > 1 {
		text = string(rep[1])
	}
	switch {
	case code == "200":
		return OK, code, ""
	case code == tsp.CodeUnknown, tsp.Is(rep, tsp.CodeError, tsp.NotActive), tsp.Is(rep, tsp.CodeError, tsp.NotReady):
		return Fail, code, text
	}
	return Info, code, text
}

// startWorkers runs n in-process workers of the service, on every node
// (in turn: only the active one keeps them). A worker's reply is
// "<body>|<worker>|<count>", its count going up with every job it runs,
// so a job run twice leaves two different replies, and each run is
// recorded (FExec). They stop when ctx ends; wait with the returned
// WaitGroup.
func (w *workload) startWorkers(ctx context.Context, n int) (*sync.WaitGroup, error) {
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("w%d", i)
		var count atomic.Int64
		eps := append(append([]string{}, w.eps[i%len(w.eps):]...), w.eps[:i%len(w.eps)]...)
		wk, err := worker.New(worker.Config{
			Brokers: eps, Service: w.service,
			HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond, Logger: quiet,
		}, func(ctx context.Context, req [][]byte) ([][]byte, error) {
			body := string(bytes.Join(req, nil))
			reply := fmt.Sprintf("%s|%s|%d", body, id, count.Add(1))
			w.h.Add(Op{Process: id, Type: OK, F: FExec, Body: body, Value: reply})
			// A job takes a moment, so that faults catch some in flight.
			t := time.NewTimer(rand.N(20 * time.Millisecond))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return [][]byte{[]byte(reply)}, nil
		})
		if err != nil {
			return nil, fmt.Errorf("worker %s: %w", id, err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = wk.Run(ctx) }()
	}
	return &wg, nil
}

// tracker is the client library's logger: it follows the library's
// failovers ("failing over" with the new broker) to tell which node
// answered a call. Best effort: should the library log otherwise, acks
// are attributed to "?".
type tracker struct {
	nodeOf map[string]string
	cur    *atomic.Pointer[string]
}

func newTracker(eps, nodes []string) tracker {
	tr := tracker{nodeOf: map[string]string{}, cur: new(atomic.Pointer[string])}
	for i, ep := range eps {
		tr.nodeOf[ep] = nodes[i]
	}
	first := nodes[0]
	tr.cur.Store(&first)
	return tr
}

// node is the node the library talks to now.
func (t tracker) node() string {
	if n := t.cur.Load(); n != nil {
		return *n
	}
	return "?"
}

func (t tracker) Enabled(context.Context, slog.Level) bool { return true }

func (t tracker) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "failing over") {
		return nil
	}
	unknown := "?"
	t.cur.Store(&unknown)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "broker" {
			if n, ok := t.nodeOf[a.Value.String()]; ok {
				t.cur.Store(&n)
			}
			return false
		}
		return true
	})
	return nil
}

func (t tracker) WithAttrs([]slog.Attr) slog.Handler { return t }
func (t tracker) WithGroup(string) slog.Handler      { return t }
