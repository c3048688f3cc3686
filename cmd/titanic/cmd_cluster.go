package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// runCluster shows a replicated deployment (every node given with
// --broker), or changes its membership: join ID RAFTADDR, leave ID.
func runCluster(e env) error {
	sub := ""
	args := e.args
	if len(args) > 0 && (args[0] == "join" || args[0] == "leave" || args[0] == "forget-peer-split") {
		sub, args = args[0], args[1:]
	}
	fs := newFlags(e, "cluster", "[join|leave|forget-peer-split] [flags] [ID [RAFT-ADDR]]\n\n  titanic cluster --broker A,B,C               status of every node, lag behind the leader\n  titanic cluster join --broker A,B,C ID ADDR   add a member (sent to the leader; a group's gets its vote once caught up)\n  titanic cluster leave --broker A,B,C ID       remove a member\n  titanic cluster forget-peer-split --broker A  pair: stop answering \"not ready\" for tickets the absent peer\n                                               may have acknowledged alone (they answer 400 until it returns)")
	cf := addClientFlags(fs)
	asJSON := addJSONFlag(fs)
	voter := fs.Bool("voter", false, "join: give the member (already joined) its vote now: for a member of a release older than this one, which does not ask for it; a group's leader refuses it for a member that has not reported being caught up")
	force := fs.Bool("force", false, "join --voter: give the vote although the leader does not know the member caught up (check `titanic cluster` first: a voter that is down or far behind raises the quorum at once)")
	if err := e.parseFlags(fs, args); err != nil {
		return err
	}
	if a := fs.Args(); sub == "" && len(a) > 0 && (a[0] == "join" || a[0] == "leave" || a[0] == "forget-peer-split") {
		// Flags came first: cluster --broker A,B,C join ID ADDR.
		sub = a[0]
		if err := fs.Parse(append([]string{"--"}, a[1:]...)); err != nil {
			return err
		}
	}
	switch sub {
	case "join":
		if fs.NArg() != 2 {
			return usagef("want join ID RAFT-ADDR")
		}
		switch {
		case *force && !*voter:
			return usagef("--force goes with join --voter")
		case *force:
			return clusterChange(e, cf, tsp.SvcJoin, fs.Arg(0), fs.Arg(1), tsp.JoinVoterForce)
		case *voter:
			return clusterChange(e, cf, tsp.SvcJoin, fs.Arg(0), fs.Arg(1), tsp.JoinVoter)
		}
		return clusterChange(e, cf, tsp.SvcJoin, fs.Arg(0), fs.Arg(1))
	case "leave":
		if fs.NArg() != 1 {
			return usagef("want leave ID")
		}
		return clusterChange(e, cf, tsp.SvcLeave, fs.Arg(0))
	case "forget-peer-split":
		if fs.NArg() != 0 || len(brokerList(e, *cf.brokers)) != 1 {
			return usagef("want forget-peer-split --broker NODE (the one node that waits for its peer)")
		}
		return forgetPeerSplit(e, cf)
	}
	if fs.NArg() > 0 {
		return usagef("unknown cluster command %q: want join, leave or forget-peer-split", fs.Arg(0))
	}
	return clusterStatus(e, cf, *asJSON)
}

// clusterChange sends a membership change; the client moves on from
// followers (they answer "not active") to the leader.
func clusterChange(e env, cf clientFlags, service string, args ...string) error {
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	body := make([][]byte, len(args))
	for i, a := range args {
		body[i] = []byte(a)
	}
	rep, err := c.Request(e.ctx, service, body)
	if err != nil {
		return err
	}
	if tsp.Is(rep, tsp.CodeUnknown, tsp.UnknownService) {
		// A single node has no cluster services; an older broker's
		// answer would be the same, but it would have them for a group.
		return fmt.Errorf("%s: the broker answered %q: it is a single node (no pair or raft group), which has no membership to change: %w", service, rep[len(rep)-1], client.ErrRejected)
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return adminRefusal(service, rep)
	}
	fmt.Fprintln(e.stdout, "ok")
	return nil
}

// adminRefusal is the error of an admin request (a cluster change, a
// backup) the broker did not take: its text, and for a refusal of this
// host's address what to do about it.
func adminRefusal(service string, rep [][]byte) error {
	if tsp.Is(rep, tsp.CodeUnknown, tsp.Forbidden) {
		return fmt.Errorf("%s refused: %s (run it on a member's host, or list this host's network in security.admin_from, --admin-from, on every node): %w", service, rep[1], client.ErrRejected)
	}
	if len(rep) >= 2 && string(rep[0]) == tsp.CodeUnknown {
		// Rejected as asked (a bad name, a backup that exists): exit 4.
		return fmt.Errorf("%s: %s %s: %w", service, rep[0], rep[1], client.ErrRejected)
	}
	if len(rep) >= 2 {
		return fmt.Errorf("%s: %s %s", service, rep[0], rep[1])
	}
	return fmt.Errorf("%s: %q", service, rep)
}

type nodeStatus struct {
	endpoint string
	kv       map[string]string
	members  []string
	err      error
	// single: the broker answered, as a single node (it has no raft
	// status to give): reached, not unreachable.
	single bool
}

func (n nodeStatus) num(k string) uint64 {
	v, _ := strconv.ParseUint(n.kv[k], 10, 64)
	return v
}

// clusterStatus asks every broker for its raft status and prints them with
// their lag behind the leader's commit index.
func clusterStatus(e env, cf clientFlags, asJSON bool) error {
	if err := e.goAhead(); err != nil {
		return err
	}
	var nodes []nodeStatus
	for _, ep := range brokerList(e, *cf.brokers) {
		n := nodeStatus{endpoint: ep, kv: map[string]string{}}
		cc, err := clientCurve(*cf.serverKey, *cf.ownKey)
		if err != nil {
			return err
		}
		c, err := client.New(client.Config{Brokers: []string{ep}, Timeout: min(*cf.timeout, 2*time.Second), Retries: 1, RefusedWait: cf.refusedWait(), Curve: cc})
		if err != nil {
			return err
		}
		rep, err := c.Request(e.ctx, tsp.SvcCluster, [][]byte{{}})
		c.Close()
		switch {
		case err != nil:
			n.err = err
		case len(rep) > 1 && string(rep[0]) == "400" && strings.Contains(string(rep[1]), "unknown"):
			n.single = true
		case len(rep) == 0 || string(rep[0]) != "200":
			n.err = fmt.Errorf("answer %q (not a replicated broker?)", rep)
		default:
			for _, f := range rep[1:] {
				k, v, _ := strings.Cut(string(f), "=")
				if k == "member" {
					n.members = append(n.members, v)
					continue
				}
				n.kv[k] = v
			}
		}
		nodes = append(nodes, n)
	}
	var leaderCommit uint64
	var members []string
	clusterVersion := ""
	for _, n := range nodes {
		if n.err == nil && n.kv["state"] == "Leader" {
			leaderCommit = n.num("commit")
			members = n.members
			clusterVersion = n.kv["cluster_version"]
		}
	}
	if asJSON {
		return clusterJSON(e, nodes, leaderCommit, members)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tENDPOINT\tSTATE\tTERM\tCOMMIT\tAPPLIED\tLAG")
	reached, singles := 0, 0
	for _, n := range nodes {
		if n.err != nil {
			fmt.Fprintf(tw, "?\t%s\tunreachable: %v\t\t\t\t\n", n.endpoint, n.err)
			continue
		}
		reached++
		if n.single {
			singles++
			fmt.Fprintf(tw, "-\t%s\tsingle node (no replication)\t\t\t\t\n", n.endpoint)
			continue
		}
		lag := "?"
		if leaderCommit > 0 {
			lag = strconv.FormatInt(int64(leaderCommit)-int64(n.num("applied")), 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(n.kv["id"]), n.endpoint, shown(n.kv["state"]), shown(n.kv["term"]), shown(n.kv["commit"]), shown(n.kv["applied"]), lag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if reached > 0 && singles == reached {
		fmt.Fprintln(e.stdout, "\nthe brokers reached run as single nodes: there is no pair or group to show")
		return nil
	}
	if members == nil {
		for _, n := range nodes {
			if n.err == nil {
				members = n.members
				break
			}
		}
		fmt.Fprintln(e.stdout, "\nno leader among the nodes reached")
	}
	// Versions below the table, whose columns scripts may read.
	header := false
	for _, n := range nodes {
		if n.err == nil && !n.single {
			if !header {
				fmt.Fprintln(e.stdout, "\nversions (node, ops record version it reads, release):")
				header = true
			}
			fmt.Fprintf(e.stdout, "  %s  %s\n", shown(n.kv["id"]), shown(nodeVersion(n)))
		}
	}
	if clusterVersion != "" {
		fmt.Fprintf(e.stdout, "cluster version: %s (work that needs a newer one is refused until every member runs a release that reads it; the leader raises it within seconds of the last upgrade)\n", shown(clusterVersion))
	} else if leaderCommit > 0 {
		fmt.Fprintln(e.stdout, "cluster version: 1 (the leader runs a release that keeps none)")
	}
	fmt.Fprintln(e.stdout, "\nmembers (id, raft address, role):")
	for _, m := range members {
		fmt.Fprintln(e.stdout, "  "+strings.ReplaceAll(shown(m), ",", "  "))
	}
	if reached == 0 {
		return fmt.Errorf("%w: no node answered", client.ErrUnavailable)
	}
	return nil
}

// nodeVersion is a node's line of versions: the ops record version it
// reads and its release; a node of the first release reports neither.
func nodeVersion(n nodeStatus) string {
	p, ok := n.kv["protocol"]
	if !ok {
		return "1  v0.1.0 (reports no version)"
	}
	return p + "  " + n.kv["release"]
}

// forgetPeerSplit tells one pair node to stop waiting for its peer's split
// and prints what that gives up.
func forgetPeerSplit(e env, cf clientFlags) error {
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Request(e.ctx, tsp.SvcForget, [][]byte{{}})
	if err != nil {
		return err
	}
	if len(rep) < 2 || string(rep[0]) != "200" {
		return adminRefusal(tsp.SvcForget, rep)
	}
	fmt.Fprintln(e.stdout, string(rep[1]))
	return nil
}

// clusterJSON prints `cluster --json`: one document with every node asked
// and the members as the leader (else the first node reached) has them.
func clusterJSON(e env, nodes []nodeStatus, leaderCommit uint64, members []string) error {
	type nodeJSON struct {
		Endpoint string `json:"endpoint"`
		Reached  bool   `json:"reached"`
		Error    string `json:"error,omitempty"`
		// Single: a single node (no replication): no raft fields.
		Single  bool   `json:"single,omitempty"`
		ID      string `json:"id,omitempty"`
		State   string `json:"state,omitempty"`
		Term    uint64 `json:"term,omitempty"`
		Commit  uint64 `json:"commit,omitempty"`
		Applied uint64 `json:"applied,omitempty"`
		// Lag is the leader's commit index minus this node's applied
		// index; absent when no leader was reached.
		Lag *int64 `json:"lag,omitempty"`
		// Protocol is the ops record version the node reads (1 for a
		// node of the first release, which reports none) and Release
		// its binary's version.
		Protocol int    `json:"protocol,omitempty"`
		Release  string `json:"release,omitempty"`
		// ClusterVersion is the node's view of the cluster version.
		ClusterVersion int `json:"cluster_version,omitempty"`
	}
	type memberJSON struct {
		ID   string `json:"id"`
		Addr string `json:"addr"`
		Role string `json:"role"`
	}
	out := struct {
		Nodes   []nodeJSON   `json:"nodes"`
		Leader  bool         `json:"leader"` // a leader was among the nodes reached
		Members []memberJSON `json:"members"`
	}{Nodes: []nodeJSON{}, Members: []memberJSON{}}
	reached := 0
	for _, n := range nodes {
		nj := nodeJSON{Endpoint: n.endpoint, Reached: n.err == nil, Single: n.single}
		if n.err != nil {
			nj.Error = n.err.Error()
		} else {
			reached++
		}
		if n.err == nil && !n.single {
			nj.ID, nj.State = n.kv["id"], n.kv["state"]
			nj.Term, nj.Commit, nj.Applied = n.num("term"), n.num("commit"), n.num("applied")
			nj.Protocol, nj.Release, nj.ClusterVersion = 1, n.kv["release"], int(n.num("cluster_version"))
			if _, ok := n.kv["protocol"]; ok {
				nj.Protocol = int(n.num("protocol"))
			}
			if leaderCommit > 0 {
				lag := int64(leaderCommit) - int64(nj.Applied)
				nj.Lag = &lag
			}
			if members == nil {
				members = n.members
			}
		}
		out.Nodes = append(out.Nodes, nj)
	}
	out.Leader = leaderCommit > 0
	for _, m := range members {
		f := strings.SplitN(m, ",", 3)
		for len(f) < 3 {
			f = append(f, "")
		}
		out.Members = append(out.Members, memberJSON{f[0], f[1], f[2]})
	}
	if err := printJSON(e.stdout, out); err != nil {
		return err
	}
	if reached == 0 {
		return fmt.Errorf("%w: no node answered", client.ErrUnavailable)
	}
	return nil
}
