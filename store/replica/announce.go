package replica

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// Announcements: what a leader tells every member through the log
// without a new op kind. An announcement is an entry of no ops (an ops
// record every release reads) whose raft log extension carries
//
//	titanic/meta leader=ID endpoint=ENDPOINT [curve=SERVERKEY] [cluster=N] [solo]
//
// Members of the first release ignore extensions, so an announcement is
// safe to write whatever they run; this build's fsm notes the leader's
// client endpoint (members that are not leaders report their versions to
// it: see titanic/ha) and applies the cluster version to the store in the
// same transaction as the entry.
var metaPrefix = []byte("titanic/meta ")

// Announcement is what Announce writes.
type Announcement struct {
	// Endpoint is the leader's client endpoint (tcp://host:port), and
	// Curve its broker's CURVE public key (Z85) when it requires CURVE.
	Endpoint string
	Curve    string
	// ClusterVersion, when above the store's, raises it: every member
	// reported a binary that reads ops records of that version.
	ClusterVersion int
}

// LeaderInfo is the last announcement a node applied.
type LeaderInfo struct {
	ID, Endpoint, Curve string
	// Term is the raft term of the entry.
	Term uint64
}

func encodeMeta(id string, a Announcement, solo bool) []byte {
	b := append([]byte(nil), metaPrefix...)
	b = fmt.Appendf(b, "leader=%s endpoint=%s", id, a.Endpoint)
	if a.Curve != "" {
		b = fmt.Appendf(b, " curve=%s", a.Curve)
	}
	if a.ClusterVersion > 0 {
		b = fmt.Appendf(b, " cluster=%d", a.ClusterVersion)
	}
	if solo {
		b = append(b, " solo"...)
	}
	return b
}

// meta is a decoded announcement.
type meta struct {
	leader, endpoint, curve string
	cluster                 int
	solo                    bool
}

// decodeMeta reads an announcement extension; ok is false for any other
// extension. Fields it does not know are skipped: a later release may add
// some.
func decodeMeta(ext []byte) (m meta, ok bool) {
	if !bytes.HasPrefix(ext, metaPrefix) {
		return m, false
	}
	for _, f := range strings.Fields(string(ext[len(metaPrefix):])) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "leader":
			m.leader = v
		case "endpoint":
			m.endpoint = v
		case "curve":
			m.curve = v
		case "cluster":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				m.cluster = n
			}
		case "solo":
			m.solo = true
		}
	}
	return m, true
}

// Announce writes an announcement (leader only) and waits until it is
// applied here.
func (n *Node) Announce(ctx context.Context, a Announcement) error {
	r := n.raft()
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	if strings.ContainsAny(a.Endpoint+a.Curve, " \t\n") {
		return fmt.Errorf("%w: endpoint %q or key holds white space", ErrConfig, a.Endpoint)
	}
	l := raft.Log{Data: store.EncodeOps(nil), Extensions: encodeMeta(n.cfg.ID, a, n.solo.Load())}
	f := r.ApplyLog(l, n.timeout(ctx))
	if err := waitFuture(ctx, r, f); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if resp, ok := f.Response().(response); ok && resp.err != nil {
		return fmt.Errorf("announce: %w", resp.err)
	}
	return nil
}

// LeaderInfo returns the last announcement this node applied (zero before
// the first).
func (n *Node) LeaderInfo() LeaderInfo {
	if p := n.fsm.leader.Load(); p != nil {
		return *p
	}
	return LeaderInfo{}
}

// ClusterVersion returns the store's cluster version (see
// store.BoltStore.ClusterVersion), from memory: it reads no store.
func (n *Node) ClusterVersion(context.Context) (int, error) {
	return int(max(n.fsm.cluster.Load(), 1)), nil
}
