package ha

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

func TestAdminSourcesAllow(t *testing.T) {
	s := &AdminSources{
		Hosts: func() []string { return []string{"10.1.2.3:7000", "[2001:db8::5]:7000", "localhost:7000"} },
		Extra: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")},
	}
	for from, ok := range map[string]bool{
		"":                  true, // ipc, inproc
		"127.0.0.1":         true,
		"::1":               true,
		"::ffff:127.0.0.1":  true,
		"10.1.2.3":          true, // a member's host
		"::ffff:10.1.2.3":   true,
		"2001:db8::5":       true,
		"192.168.7.44":      true, // security.admin_from
		"10.1.2.4":          false,
		"192.0.2.9":         false,
		"2001:db8::6":       false,
		"not an address":    false,
		"192.168.8.1":       false,
		"::ffff:192.0.2.10": false,
	} {
		err := s.Allow(from)
		if (err == nil) != ok || err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("Allow(%q) = %v, want allowed %v", from, err, ok)
		}
	}
	// A client on this host that dials one of its other addresses.
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if p, err := netip.ParsePrefix(ad.String()); err == nil && !p.Addr().IsLoopback() {
			if err := s.Allow(p.Addr().String()); err != nil {
				t.Errorf("Allow(%s), this host's own address: %v", p.Addr(), err)
			}
		}
	}
}

// The admin services that change the cluster answer 400 forbidden to an
// address that is not this host's, a member's or the operator's, and
// change nothing; reads are answered to anyone.
func TestAdminChangesOnlyFromAllowedHosts(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := soloLeader(t)
	r := make(chanReplier, 1)
	a := NewAdmin(node, r, log)
	a.Sources = &AdminSources{Hosts: func() []string { return []string{"10.1.2.3:7000"} }}
	call := func(from, service string, body ...string) [][]byte {
		t.Helper()
		req := broker.Request{Service: service, From: from}
		for _, b := range body {
			req.Body = append(req.Body, []byte(b))
		}
		if out := a.ServeMDP(req); out != nil {
			return out
		}
		select {
		case out := <-r:
			return out
		case <-time.After(15 * time.Second):
			t.Fatalf("%s from %s: no answer", service, from)
			return nil
		}
	}
	members := func() int {
		ms, err := node.Members()
		if err != nil {
			t.Fatal(err)
		}
		return len(ms)
	}
	for _, req := range [][]string{
		{tsp.SvcJoin, "evil", "192.0.2.9:7000"},
		{tsp.SvcJoin, "evil", "192.0.2.9:7000", tsp.JoinNonvoter},
		{tsp.SvcLeave, "n1"},
		{tsp.SvcAdopt, string(store.EncodeOps(nil))},
		{tsp.SvcForget, ""},
		{tsp.SvcVersion, "report", "n1", "9", "v9"},
	} {
		if out := call("192.0.2.9", req[0], req[1:]...); !tsp.Is(out, tsp.CodeUnknown, tsp.Forbidden) {
			t.Errorf("%s from 192.0.2.9 = %q, want 400 forbidden", req[0], out)
		}
	}
	if n := members(); n != 1 {
		t.Fatalf("%d members after refused joins, want 1", n)
	}
	if out := call("192.0.2.9", tsp.SvcCluster, ""); string(out[0]) != tsp.CodeOK {
		t.Errorf("status read from 192.0.2.9 = %q, want 200", out)
	}
	// From a member's host and from this one, a join (without a vote, so
	// that the test group keeps its quorum) goes through.
	for i, from := range []string{"10.1.2.3", "127.0.0.1"} {
		id := []string{"m1", "m2"}[i]
		if out := call(from, tsp.SvcJoin, id, "10.1.2.3:700"+id[1:], tsp.JoinNonvoter); string(out[0]) != tsp.CodeOK {
			t.Fatalf("join from %s = %q, want 200", from, out)
		}
	}
	if n := members(); n != 3 {
		t.Fatalf("%d members after two allowed joins, want 3", n)
	}
}
