package titanic

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// The Service's client mutations: what a submit or a close hands to the
// committer, and what its completion does with the other parts (the
// dispatcher, admission's disk account, the stats, the notifier, the
// answer).

// submit stores a new ticket and answers once it is durable.
func (s *Service) submit(req broker.Request, r submitReq) [][]byte {
	// One closure per submit: the answer is sent from it, not from a
	// second closure it would call.
	err := s.storeSubmit(r, func(res store.Result, err error) {
		out := submitAnswer(req.Service, res, err)
		if err == nil || !errors.Is(err, store.ErrNotLeader) {
			out = echoKey(req.Service, out, req.Body)
		}
		// else as the broker's gate refuses it, without the key: the
		// node does not serve any more, and clients take a keyless
		// "not active" for the node's (a pipeline sends every submit in
		// flight there again), but settled a keyed one as this submit's
		// failure.
		s.answer(req.Client, req.Service, out)
	})
	if err != nil {
		return busyReply()
	}
	return nil
}

// submitAnswer is the answer to a submit whose store outcome is res, err,
// before echoKey adds the key.
func submitAnswer(service string, res store.Result, err error) [][]byte {
	if err != nil {
		return submitRefusal(err)
	}
	how := ""
	if service == tsp.SvcSubmit || service == tsp.SvcSubmit2 {
		how = "new"
		if res.Duplicate {
			how = "duplicate"
		}
	}
	// The frames share one allocation, and the answer has room for the
	// key echoKey appends: two allocations, not six.
	buf := make([]byte, 0, len(tsp.CodeOK)+2*len(res.ID)+len(how))
	buf = append(buf, tsp.CodeOK...)
	buf = hex.AppendEncode(buf, res.ID[:]) // res.ID.String()
	buf = append(buf, how...)
	code, ticket := len(tsp.CodeOK), len(tsp.CodeOK)+2*len(res.ID)
	out := make([][]byte, 2, 4)
	out[0], out[1] = buf[:code:code], buf[code:ticket:ticket]
	if how != "" {
		out = append(out, buf[ticket:])
	}
	return out
}

// submitRefusal is the answer to a submit the store refused. Apart from
// submitAnswer: the error target errors.As needs goes to the heap, and
// must not cost the submits that succeed an allocation.
func submitRefusal(err error) [][]byte {
	var kc *store.KeyConflictError
	switch {
	case errors.As(err, &kc):
		return replyText(tsp.CodeUnknown, keyConflictText(kc))
	case errors.Is(err, store.ErrUncertain):
		// Stored or not: the same key again tells.
		return replyText(tsp.CodeError, tsp.Uncertain.Text("send it again with the same key ("+err.Error()+")"))
	case errors.Is(err, store.ErrClusterVersion):
		// A submit with lifecycle options, to a cluster with a member
		// that could not read them: 400, resending cannot help.
		return replyText(tsp.CodeUnknown, tsp.NotSupported.Text(clusterVersionText(err)))
	}
	return storeRefusal("not stored", err)
}

// storeRefusal is the 500 of a mutation the store did not take. A node
// that lost raft leadership meanwhile stored nothing: it answers "not
// active", as it now would to any request, so that clients ask the node
// that serves (a plain 500 made the Go client give up on a submit it
// could have resent elsewhere at no risk).
func storeRefusal(what string, err error) [][]byte {
	if errors.Is(err, store.ErrNotLeader) {
		return replyText(tsp.CodeError, tsp.NotActive.Text(what+": "+err.Error()))
	}
	return replyText(tsp.CodeError, what+": "+err.Error())
}

// keyConflictText is the text of titanic.submit's key conflict answer:
// tsp.KeyConflict, the ticket that holds the key, then for people what
// differs (the key itself is the answer's last frame).
func keyConflictText(kc *store.KeyConflictError) string {
	what := fmt.Sprintf("submitted to service %q with another body", kc.Service)
	if kc.Field == "service" {
		what = fmt.Sprintf("submitted to another service (%q)", kc.Service)
	}
	return tsp.KeyConflict.Text(kc.Ticket.String() + ": " + what)
}

// storeSubmit hands a parsed submit to the store, and calls done once it
// is durable (a new ticket queued for dispatch, or the duplicate of a
// keyed one) or failed. It returns errBusy when the commit queue is full.
func (s *Service) storeSubmit(r submitReq, done func(res store.Result, err error)) error {
	id := store.NewID()
	if s.cfg.MintTag != 0 {
		id[15] = id[15]&0xf0 | s.cfg.MintTag&0x0f
	}
	// The completion takes now, not op: op would go to the heap with it.
	now := s.cfg.Now()
	op := store.Op{Kind: store.OpSubmit, ID: id, Time: now, Service: r.service, Body: r.body, IdemKey: r.idemKey, Lifecycle: r.lifecycle}
	size := bodySize(r.body)
	s.adm.diskSubmitted(size)
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		s.adm.diskCommitted(size, batchErr == nil && res.Err == nil)
		switch {
		case batchErr != nil:
			done(res, batchErr)
			return
		case res.Err != nil:
			done(res, res.Err)
			return
		}
		s.stats.submits.Add(1)
		if !res.Duplicate {
			s.tallySubmit(r.service)
			s.enlist((&entry{id: res.ID, service: r.service, seq: res.Seq, queued: now}).withLifecycle(r.lifecycle, 0), r.body)
			s.note(res.ID, "pending", r.service)
		} else {
			s.stats.duplicates.Add(1)
		}
		done(res, nil)
	}})
	if err != nil {
		s.adm.diskCommitted(size, false)
	}
	return err
}

// enlist queues a durable pending ticket for dispatch (or for its due
// time); the broker is woken once the commit's completions have run.
// Store completer only.
func (s *Service) enlist(e *entry, body [][]byte) {
	ready, kick, _ := s.d.enlist(e, body, s.cfg.Now())
	if kick {
		s.kickSchedule()
	}
	if ready {
		s.commits.wakeAfter(e.service)
	}
}

// closeTicket deletes a ticket (9/TSP titanic.close) and answers 200.
func (s *Service) closeTicket(req broker.Request, id store.ID) [][]byte {
	op := store.Op{Kind: store.OpClose, ID: id, Time: s.cfg.Now()}
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		if batchErr != nil {
			s.answer(req.Client, req.Service, storeRefusal("not closed", batchErr))
			return
		}
		s.forgetResult(res)
		s.tallyClose(res)
		if !res.Existed && s.cfg.MaybeElsewhere != nil && s.cfg.MaybeElsewhere(id) {
			// The peer may hold it (a split not merged yet): a 200 now
			// would let its handover bring it back. Try again later.
			s.answer(req.Client, req.Service, replyText(tsp.CodeError, NotMerged))
			return
		}
		s.stats.closes.Add(1)
		if res.Existed {
			s.closed(id, res.Service)
		}
		s.answer(req.Client, req.Service, reply(tsp.CodeOK))
	}})
	if err != nil {
		return busyReply()
	}
	return nil
}

// closed tells subscribers and the parked waits of a ticket that it was
// closed: a wait answers 400 (unknown) at once, not 300 at its timeout
// after a lookup answered 400.
func (s *Service) closed(id store.ID, service string) {
	s.note(id, "closed", service)
	s.look.notify(id)
}

// clusterVersionText explains a refusal for the cluster version to a
// client.
func clusterVersionText(err error) string {
	var cv *store.ClusterVersionError
	if !errors.As(err, &cv) {
		return err.Error()
	}
	return fmt.Sprintf("%s needs cluster version %d and this cluster is at %d: a broker runs an older release (upgrade it), or has not reported its version yet (a new cluster is raised within seconds of its members' reports: try again); titanic cluster shows each one's version", cv.Kind, cv.Need, cv.Have)
}

// forget drops a ticket from the dispatcher (closed or finished).
func (s *Service) forget(id store.ID) { s.d.forget(id) }

// forgetResult drops the ticket an op finished or deleted (see
// dispatcher.forgetResult).
func (s *Service) forgetResult(res store.Result) { s.d.forgetResult(res) }

// isFinal reports whether err means the ticket was closed or finished
// meanwhile, which is normal and not a failure of the batch.
func isFinal(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrFinal)
}
