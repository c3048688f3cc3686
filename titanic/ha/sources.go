package ha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ErrForbidden: a cluster change asked from an address that may not ask
// it (see AdminSources).
var ErrForbidden = errors.New("not allowed from this address")

// AdminSources decides where the admin services that change the cluster
// (join, leave, adopt, forget, version reports) and titanic.backup may be
// asked from: this host (loopback, its own addresses, or ipc), the hosts
// of the cluster's members (the raft addresses of its configuration, and
// the pair's peer), and the networks an operator adds
// (security.admin_from). Anyone who can reach a client endpoint can
// submit; only these may add a member, hand over work or write files.
type AdminSources struct {
	// Hosts returns the members' hosts (host or host:port), resolved when
	// they are names.
	Hosts func() []string
	// Extra are the operator's networks.
	Extra []netip.Prefix

	mu       sync.Mutex
	resolved map[string]resolved
	own      resolved // this host's interface addresses
}

type resolved struct {
	addrs []netip.Addr
	at    time.Time
}

// resolveEvery is how long a member host's name resolution is kept.
const resolveEvery = 30 * time.Second

// Allow returns nil when from (an IP address, Request.From) may ask for
// a cluster change, else an error wrapping ErrForbidden that says why.
func (s *AdminSources) Allow(from string) error {
	if from == "" {
		return nil // ipc or inproc: this host
	}
	a, err := netip.ParseAddr(from)
	if err != nil {
		return fmt.Errorf("%w: %q is no IP address", ErrForbidden, from)
	}
	a = a.Unmap()
	if a.IsLoopback() || s.isOwn(a) {
		return nil
	}
	for _, p := range s.Extra {
		if p.Contains(a) {
			return nil
		}
	}
	if s.Hosts != nil {
		for _, h := range s.Hosts() {
			for _, m := range s.resolve(h) {
				if m == a {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %s is not this host, a member's host, or in security.admin_from", ErrForbidden, a)
}

// isOwn reports whether a is one of this host's addresses (a client on
// this host that dials one of them comes from it).
func (s *AdminSources) isOwn(a netip.Addr) bool {
	s.mu.Lock()
	own := s.own
	s.mu.Unlock()
	if own.at.IsZero() || time.Since(own.at) > resolveEvery {
		own = resolved{at: time.Now()}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, ad := range addrs {
				if p, err := netip.ParsePrefix(ad.String()); err == nil {
					own.addrs = append(own.addrs, p.Addr().Unmap())
				}
			}
		}
		s.mu.Lock()
		s.own = own
		s.mu.Unlock()
	}
	for _, o := range own.addrs {
		if o == a {
			return true
		}
	}
	return false
}

// resolve returns the addresses of a member's host (cached).
func (s *AdminSources) resolve(hostport string) []netip.Addr {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimPrefix(strings.TrimSuffix(host, "]"), "[")
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	if host == "" {
		return nil
	}
	s.mu.Lock()
	r, ok := s.resolved[host]
	s.mu.Unlock()
	if ok && time.Since(r.at) < resolveEvery {
		return r.addrs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	r = resolved{at: time.Now()}
	if err == nil {
		for _, n := range names {
			r.addrs = append(r.addrs, n.Unmap())
		}
	}
	s.mu.Lock()
	if s.resolved == nil {
		s.resolved = make(map[string]resolved)
	}
	s.resolved[host] = r
	s.mu.Unlock()
	return r.addrs
}
