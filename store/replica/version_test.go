package replica_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// failedTicket submits a ticket through the leader of ms and fails it
// (see onLeader: a ticket of a try whose outcome was unknown is left as
// it is, and the next try makes another).
func failedTicket(t *testing.T, ms ...*member) store.ID {
	t.Helper()
	var id store.ID
	onLeader(t, ms, "submit and fail", func(l *member) error {
		sub := submitOp("s")
		res, err := l.n.Apply(context.Background(), []store.Op{sub, {Kind: store.OpFail, ID: sub.ID, Time: time.Now(), Reason: "no"}})
		if err != nil {
			return err
		}
		if res[0].Err != nil || res[1].Err != nil {
			return fmt.Errorf("%+v", res)
		}
		id = sub.ID
		return nil
	})
	return id
}

// leadershipMoved says whether err is a leader's answer that it does not
// lead (nothing was done) or lost its leadership while it committed (the
// outcome is unknown): a client sends the call again, to the leader of
// the moment.
func leadershipMoved(err error) bool {
	return errors.Is(err, replica.ErrNotLeader) || errors.Is(err, replica.ErrUncertain) ||
		errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)
}

// onLeader runs do on the leader of ms, and again on the leader of the
// moment while it fails because leadership moved (leadershipMoved), for
// up to wait; it returns the member do succeeded on. Raft promises a
// leader, not the same one: with these tests' 200 ms timeouts a loaded
// machine's stall makes a leader step down between two calls. do must be
// safe to repeat after an unknown outcome.
func onLeader(t *testing.T, ms []*member, what string, do func(l *member) error) *member {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		l := leader(t, ms)
		err := do(l)
		if err == nil {
			return l
		}
		if !leadershipMoved(err) || time.Now().After(deadline) {
			t.Fatalf("%s on %s: %v", what, l.id, err)
		}
	}
}

// An op of a kind newer than the cluster version stays out of the log: it
// fails alone with ErrClusterVersion and the rest of its call is applied.
// An announcement that raises the cluster version reaches every member
// (also the leader's endpoint), after which the kind is written.
func TestClusterVersionGatesNewKinds(t *testing.T) {
	ms, _ := cluster(t, 3)
	l := leader(t, ms)
	ctx := context.Background()
	id := failedTicket(t, l)

	other := submitOp("s")
	res, err := l.n.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: id, Time: time.Now()}, other})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, store.ErrClusterVersion) {
		t.Fatalf("retry at cluster version 1: %v, want ErrClusterVersion", res[0].Err)
	}
	if res[1].Err != nil || res[1].State != store.StatePending {
		t.Fatalf("the submit beside the refused retry: %+v", res[1])
	}
	if tk, err := l.st.Get(ctx, id); err != nil || tk.State != store.StateFailed {
		t.Fatalf("refused retry changed the ticket: %+v %v", tk, err)
	}

	if err := l.n.Announce(ctx, replica.Announcement{Endpoint: "tcp://10.0.0.1:5555", ClusterVersion: store.OpsRecordVersion}); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		deadline := time.Now().Add(wait)
		for {
			v, err := m.n.ClusterVersion(ctx)
			li := m.n.LeaderInfo()
			if err == nil && v == store.OpsRecordVersion && li.ID == l.id && li.Endpoint == "tcp://10.0.0.1:5555" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: cluster version %d (%v), leader info %+v, want %d and %s's endpoint", m.id, v, err, li, store.OpsRecordVersion, l.id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	res, err = l.n.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: id, Time: time.Now()}})
	if err != nil || res[0].Err != nil || res[0].State != store.StatePending {
		t.Fatalf("retry at cluster version %d: %v %+v", store.OpsRecordVersion, err, res)
	}
	for _, m := range ms {
		deadline := time.Now().Add(wait)
		for {
			tk, err := m.st.Get(ctx, id)
			if err == nil && tk.State == store.StatePending {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: retried ticket %+v %v, want pending", m.id, tk, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// A new leader starts from the raised version: it is in the log.
	l.close()
	l2 := leader(t, ms)
	id2 := failedTicket(t, l2)
	res, err = l2.n.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: id2, Time: time.Now()}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("retry on the next leader: %v %+v", err, res)
	}
}

// Announcements only move the version up; a follower cannot announce.
func TestAnnounceLeaderOnly(t *testing.T) {
	ms, _ := cluster(t, 3)
	l := leader(t, ms)
	ctx := context.Background()
	for _, m := range ms {
		if m != l {
			if err := m.n.Announce(ctx, replica.Announcement{Endpoint: "tcp://x:1"}); !errors.Is(err, replica.ErrNotLeader) {
				t.Fatalf("follower %s announced: %v, want ErrNotLeader", m.id, err)
			}
		}
	}
	for _, v := range []int{3, 2, 0} {
		if err := l.n.Announce(ctx, replica.Announcement{Endpoint: "tcp://x:1", ClusterVersion: v}); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := l.n.ClusterVersion(ctx); err != nil || v != 3 {
		t.Fatalf("cluster version %d %v, want 3 (never down)", v, err)
	}
}

// A worker's name is an optional field of a newer ops record: the leader
// drops it while its cluster cannot read it, and also after the raise of
// the cluster version until an op of a newer kind has been applied, so
// that the raise alone writes no entry the first release skips. The raise
// moves every store to format 2 (the first release, which skips entries
// it cannot read, must not start on a raised cluster's store: rolled back,
// it served without acknowledged tickets). After a newer kind, every
// member records the name.
func TestWorkerNameWaitsForFormat2(t *testing.T) {
	ms, _ := cluster(t, 3)
	ctx := context.Background()
	waitVersion := func() {
		t.Helper()
		for _, m := range ms {
			deadline := time.Now().Add(wait)
			for v, _ := m.n.ClusterVersion(ctx); v != store.OpsRecordVersion; v, _ = m.n.ClusterVersion(ctx) {
				if time.Now().After(deadline) {
					t.Fatalf("%s at cluster version %d, want %d", m.id, v, store.OpsRecordVersion)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	// attempt dispatches a ticket to worker w, requeues it and waits
	// until every member recorded the attempt; it returns their workers.
	// A try whose outcome was unknown leaves its ticket: the next try
	// makes another, whose attempt is then the only one.
	attempt := func(w string) []string {
		t.Helper()
		var sub store.Op
		onLeader(t, ms, "dispatch and requeue", func(l *member) error {
			sub = submitOp("s")
			now := time.Now()
			res, err := l.n.Apply(ctx, []store.Op{sub, {Kind: store.OpDispatch, ID: sub.ID, Time: now, Worker: w},
				{Kind: store.OpRequeue, ID: sub.ID, Time: now.Add(time.Millisecond), Reason: "lost"}})
			if err != nil {
				return err
			}
			if res[0].Err != nil || res[1].Err != nil || res[2].Err != nil {
				return fmt.Errorf("%+v", res)
			}
			return nil
		})
		var names []string
		for _, m := range ms {
			deadline := time.Now().Add(wait)
			for {
				as, err := m.st.Attempts(ctx, sub.ID)
				if err == nil && len(as) == 1 {
					names = append(names, as[0].Worker)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: attempts %+v %v, want one", m.id, as, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		return names
	}
	for i, name := range attempt("0x00aabbccdd") {
		if name != "" {
			t.Fatalf("%s recorded worker %q at cluster version 1", ms[i].id, name)
		}
	}
	for _, m := range ms {
		if m.st.NewerFormat() {
			t.Fatalf("%s: a dispatch naming its worker moved the store to format 2", m.id)
		}
	}
	onLeader(t, ms, "announce", func(l *member) error {
		return l.n.Announce(ctx, replica.Announcement{Endpoint: "tcp://10.0.0.1:5555", ClusterVersion: store.OpsRecordVersion})
	})
	waitVersion()
	for i, name := range attempt("0x00aabbccdd") {
		if name != "" {
			t.Fatalf("%s recorded worker %q after the raise alone", ms[i].id, name)
		}
	}
	for _, m := range ms {
		if !m.st.NewerFormat() || m.st.NewerKinds() {
			t.Fatalf("%s: after the raise, format 2 %v and newer kinds %v, want format 2 and none", m.id, m.st.NewerFormat(), m.st.NewerKinds())
		}
	}
	id := failedTicket(t, ms...)
	unknown := false
	onLeader(t, ms, "retry", func(l *member) error {
		res, err := l.n.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: id, Time: time.Now()}})
		if err != nil {
			unknown = unknown || errors.Is(err, replica.ErrUncertain)
			return err
		}
		if res[0].Err != nil {
			// The retry of a try whose outcome was unknown finds the
			// ticket pending when that try was applied.
			if tk, gerr := l.st.Get(ctx, id); unknown && gerr == nil && tk.State == store.StatePending {
				return nil
			}
			return fmt.Errorf("%+v", res)
		}
		return nil
	})
	for i, name := range attempt("0x00aabbccdd") {
		if name != "0x00aabbccdd" {
			t.Fatalf("%s recorded worker %q after a retry, want 0x00aabbccdd", ms[i].id, name)
		}
	}
}
