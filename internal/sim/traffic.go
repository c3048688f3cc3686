package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// The traffic: clients submit, workers take jobs and answer them, lookers
// ask what became of acknowledged tickets. Each actor draws its choices
// from its own generator, seeded from the schedule's seed; when its
// operations land (before or after a fault) is up to the run's timing.

// service is the simulated titanic service's only service.
const service = "sim"

// actorRand returns the generator of the i-th actor of a kind.
func (c *cluster) actorRand(kind string, i int) *rand.Rand {
	var k uint64
	for _, b := range []byte(kind) {
		k = k*131 + uint64(b)
	}
	return rand.New(rand.NewPCG(uint64(c.sched.Seed), k<<8|uint64(i)))
}

// pause sleeps about the schedule's pause; false once ctx is done.
func (c *cluster) pause(ctx context.Context, rng *rand.Rand, d time.Duration) bool {
	if d <= 0 {
		d = c.sched.Pause
	}
	t := time.NewTimer(d/2 + time.Duration(rng.Int64N(int64(d))))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pickServing returns a node that serves now (one of them at random,
// when a split brain makes two), or nil.
func (c *cluster) pickServing(rng *rand.Rand) *incarnation {
	var on []*incarnation
	for _, n := range c.nodes {
		if inc := n.current(); inc != nil && inc.serving() {
			on = append(on, inc)
		}
	}
	if len(on) == 0 {
		return nil
	}
	return on[rng.IntN(len(on))]
}

// mint returns a new ticket ID as the service of a node with tag mints it.
func mint(tag byte) store.ID {
	id := store.NewID()
	if tag != 0 {
		id[15] = id[15]&0xf0 | tag&0x0f
	}
	return id
}

// client submits until traffic stops; each submit is retried as the
// project's client does (see submit).
func (c *cluster) client(traffic, ctx context.Context, i int) {
	rng := c.actorRand("client", i)
	for n := 0; c.pause(traffic, rng, 0); n++ {
		body := fmt.Sprintf("c%d-%d", i, n)
		key := ""
		if rng.Float64() < c.sched.Keyed {
			key = "k" + body
		}
		c.submit(ctx, rng, key, body)
	}
}

// submitFor bounds how long a client keeps resubmitting one request.
const submitFor = 15 * time.Second

// submit sends one request to a serving node until it is acknowledged.
// A submit the node refused before it reached the log (not the leader)
// is sent again; one whose outcome is unknown (leadership lost while it
// was in flight) is sent again only with an idempotency key, as a
// client must: without one, a second submit could make a second ticket.
func (c *cluster) submit(ctx context.Context, rng *rand.Rand, key, body string) {
	deadline := time.Now().Add(submitFor)
	for time.Now().Before(deadline) {
		inc := c.pickServing(rng)
		if inc == nil {
			if !c.pause(ctx, rng, c.sched.Step) {
				return
			}
			continue
		}
		op := store.Op{Kind: store.OpSubmit, ID: mint(inc.n.tag), Time: time.Now(), Service: service, Body: [][]byte{[]byte(body)}, IdemKey: key}
		res, err := inc.apply(ctx, []store.Op{op})
		switch {
		case err == nil && res[0].Err == nil:
			c.hist.ack(Ack{Ticket: res[0].ID, Key: key, Body: body, Node: inc.n.id})
			c.log.Info("ack", "ticket", res[0].ID, "node", inc.n.id, "key", key, "serving", inc.serving())
			return
		case err == nil:
			c.log.Warn("submit refused by the store", "node", inc.n.id, "err", res[0].Err)
			return
		case errors.Is(err, replica.ErrNotLeader):
		case key == "":
			c.log.Info("submit outcome unknown", "ticket", op.ID, "node", inc.n.id, "err", err)
			return // outcome unknown: the client reports the error
		}
		if !c.pause(ctx, rng, 0) {
			return
		}
	}
}

// lease is a job a worker holds on one incarnation of a node: the
// serving node gives each unfinished ticket to one worker at a time, and
// a node that takes over gives out again what the old one had given
// (redelivery).
type lease struct {
	inc *incarnation
	id  store.ID
}

func (c *cluster) take(l lease) bool {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	if c.leases[l] {
		return false
	}
	c.leases[l] = true
	return true
}

func (c *cluster) release(l lease) {
	c.leaseMu.Lock()
	delete(c.leases, l)
	c.leaseMu.Unlock()
}

var errEnough = errors.New("enough")

// worker takes jobs from the serving node and answers them: OpDispatch
// (the attempt), then, unless it dies first, OpReply with a reply that
// names the ticket's body and the attempt.
func (c *cluster) worker(ctx context.Context, i int) {
	rng := c.actorRand("worker", i)
	for c.draining.Load() && ctx.Err() == nil || c.pause(ctx, rng, 0) {
		inc := c.pickServing(rng)
		if inc == nil {
			continue
		}
		var open []store.Ticket
		err := inc.rep.Unfinished(ctx, func(t store.Ticket) error {
			if !c.leased(lease{inc, t.ID}) {
				open = append(open, t)
			}
			if len(open) >= 8 {
				return errEnough
			}
			return nil
		})
		if err != nil && !errors.Is(err, errEnough) || len(open) == 0 {
			if c.draining.Load() && !c.pause(ctx, rng, c.sched.Step) {
				return
			}
			continue
		}
		l := lease{inc, open[rng.IntN(len(open))].ID}
		if !c.take(l) {
			continue
		}
		c.work(ctx, rng, l)
		c.release(l)
	}
}

func (c *cluster) leased(l lease) bool {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	return c.leases[l]
}

func (c *cluster) work(ctx context.Context, rng *rand.Rand, l lease) {
	inc := l.inc
	t, err := inc.rep.Get(ctx, l.id)
	if err != nil || len(t.Body) != 1 {
		return
	}
	res, err := inc.apply(ctx, []store.Op{{Kind: store.OpDispatch, ID: l.id, Time: time.Now()}})
	if err != nil || res[0].Err != nil {
		return
	}
	attempt := res[0].Attempts
	c.hist.dispatch(Dispatch{Ticket: l.id, Attempt: attempt, Node: inc.n.id})
	c.log.Info("dispatch", "ticket", l.id, "attempt", attempt, "node", inc.n.id)
	drain := c.draining.Load()
	if rng.Float64() < c.sched.WorkerDeath && !drain {
		// The worker dies with the job; the node gives it out again
		// once the worker's silence is noticed.
		c.pause(ctx, rng, 4*c.sched.Step)
		return
	}
	if !drain && !c.pause(ctx, rng, time.Duration(rng.IntN(3))*c.sched.Step) {
		return
	}
	if !inc.serving() {
		return // the node that gave the job out no longer serves: the reply is dropped
	}
	reply := replyOf(string(t.Body[0]), attempt)
	res, err = inc.apply(ctx, []store.Op{{Kind: store.OpReply, ID: l.id, Time: time.Now(), Reply: [][]byte{[]byte(reply)}}})
	c.hist.reply(Reply{Ticket: l.id, Attempt: attempt, Reply: reply, Acked: err == nil && res[0].Err == nil, Node: inc.n.id})
	if err == nil {
		err = res[0].Err
	}
	c.log.Info("reply", "ticket", l.id, "attempt", attempt, "node", inc.n.id, "err", err)
}

// looker asks what became of acknowledged tickets.
func (c *cluster) looker(ctx context.Context, i int) {
	rng := c.actorRand("looker", i)
	for c.pause(ctx, rng, 0) {
		a, ok := c.hist.acked(rng.IntN(1 << 30))
		if !ok {
			continue
		}
		inc := c.pickServing(rng)
		if inc == nil {
			continue
		}
		if l := c.lookup(ctx, inc, a.Ticket); l.Kind != Refused {
			c.hist.lookup(l)
		}
	}
}

// lookup answers a lookup of id at inc as titanic.Service does: a reply
// or failure recorded in the store is final; a ticket the store lacks is
// "not ready" when the pair's peer may hold it (ha.Pair.MaybeElsewhere),
// and "unknown" only once the node confirmed it was the leader after the
// lookup began (replica.ConfirmLeader) and the store still lacks it.
func (c *cluster) lookup(ctx context.Context, inc *incarnation, id store.ID) Lookup {
	l := Lookup{Ticket: id, Answer: Answer{Node: inc.n.id}}
	l.Seq = c.hist.next()
	l.Kind, l.Reply = c.read(ctx, inc, id)
	if l.Kind != Unknown {
		return l
	}
	l.Seq = c.hist.next()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := inc.call("ConfirmLeader", func() error { return inc.rep.ConfirmLeader(cctx) })
	cancel()
	if err != nil {
		l.Kind = Refused
		return l
	}
	l.Kind, l.Reply = c.read(ctx, inc, id)
	return l
}

func (c *cluster) read(ctx context.Context, inc *incarnation, id store.ID) (AnswerKind, string) {
	t, rep, err := inc.rep.Reply(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if inc.pair != nil && inc.pair.MaybeElsewhere(id) {
			return NotReady, ""
		}
		return Unknown, ""
	case err != nil:
		return Refused, ""
	case t.State == store.StateDone && len(rep) == 1:
		return Done, string(rep[0])
	case t.State == store.StateDone:
		return Done, fmt.Sprintf("%q", rep)
	case t.State == store.StateFailed:
		return Failed, ""
	}
	return Pending, ""
}
