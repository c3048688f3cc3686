package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/titanicmq/titanic/broker/zsock"
)

// Validate checks every setting and the settings against each other. The
// error lists every problem, one a line, each naming the key and its flag
// and wrapping ErrInvalid.
func (c Config) Validate() error { return c.validate(nil) }

// validate is Validate whose errors also say where each value came from
// (see origins).
func (c Config) validate(origin origins) error {
	ck := checker{origin: origin}

	// [broker]
	if len(c.Broker.Listen) == 0 {
		ck.bad("broker.listen", "at least one endpoint is needed")
	}
	for _, ep := range c.Broker.Listen {
		ck.endpoint("broker.listen", ep)
	}
	ck.positive("broker.heartbeat", c.Broker.Heartbeat)
	ck.atLeast("broker.liveness", c.Broker.Liveness, 1)
	ck.positive("broker.lease_timeout", c.Broker.LeaseTimeout)
	ck.positive("broker.request_expiry", c.Broker.RequestExpiry)

	// [store]
	if strings.TrimSpace(c.Store.Dir) == "" {
		ck.bad("store.dir", "a directory is needed")
	}
	ck.positive("store.lock_timeout", c.Store.LockTimeout)
	ck.atLeast("store.max_batch", c.Store.MaxBatch, 1)
	if c.Store.Linger < 0 || c.Store.Linger > time.Second {
		ck.bad("store.linger", "%s: want 0 (commit at once) up to 1s", formatDuration(c.Store.Linger))
	}
	if c.Store.MaxBatchBytes < KiB {
		ck.bad("store.max_batch_bytes", "%s: want at least 1KiB", c.Store.MaxBatchBytes)
	}

	// [queue]
	ck.atLeast("queue.max_attempts", c.Queue.MaxAttempts, 1)
	ck.positive("queue.backoff_max", c.Queue.BackoffMax)
	seen := map[string]bool{}
	for _, r := range c.Queue.Services {
		switch {
		case r.Name == "":
			ck.bad("queue.services", "a policy without a service name")
		case seen[r.Name]:
			ck.bad("queue.services", "service %q appears twice", r.Name)
		case r.MaxAttempts < 0:
			ck.bad("queue.services", "service %q: max_attempts %d: want 1 or more (0: the broker's)", r.Name, r.MaxAttempts)
		case r.BackoffBase > 0 && r.BackoffBase < time.Millisecond, r.BackoffMax != 0 && r.BackoffMax < time.Millisecond:
			// A bare TOML integer in a table decodes as nanoseconds.
			ck.bad("queue.services", "service %q: a backoff under 1ms; durations are strings such as \"2s\"", r.Name)
		}
		seen[r.Name] = true
	}
	if t := c.Queue.NoWorkerTimeout; t > 0 && t < time.Millisecond {
		// A bare TOML integer decodes as nanoseconds.
		ck.bad("queue.no_worker_timeout", "%s: under 1ms; durations are strings such as \"1h\" (negative, \"-1s\": for ever)", formatDuration(t))
	}
	ck.atLeast("queue.readers", c.Queue.Readers, 1)

	// [limits]
	l := c.Limits
	// One rule for "no limit": -1 (a negative duration for done_ttl).
	// 0, which older versions documented as "no limit", keeps that
	// meaning (see Unlimited).
	if l.MaxMessageSize > 0 && l.MaxMessageSize < KiB {
		ck.bad("limits.max_message_size", "%s: want -1 (no limit) or at least 1KiB: smaller refuses the protocol's own frames", l.MaxMessageSize)
	}
	ck.limit("limits.max_message_size", int64(l.MaxMessageSize))
	ck.limit("limits.max_body", int64(l.MaxBody))
	ck.limit("limits.per_client_inflight", int64(l.PerClientInflight))
	if (l.SubmitRate < 0 && l.SubmitRate != -1) || math.IsNaN(l.SubmitRate) || math.IsInf(l.SubmitRate, 0) {
		ck.bad("limits.submit_rate", "%v: want -1 (no limit) or a positive number of submits per second", l.SubmitRate)
	}
	ck.atLeast("limits.submit_burst", l.SubmitBurst, 0)
	if l.SubmitRate > 0 && l.SubmitBurst < 1 {
		ck.bad("limits.submit_burst", "%d: a submit rate needs a burst of at least 1", l.SubmitBurst)
	}
	ck.limit("limits.disk_quota", int64(l.DiskQuota))
	ck.limit("limits.disk_reserve", int64(l.DiskReserve))
	ck.atLeast("limits.max_queue", l.MaxQueue, 1)
	ck.atLeast("limits.max_queued_ops", l.MaxQueuedOps, 1)
	ck.atLeast("limits.max_queued_reads", l.MaxQueuedReads, 1)
	ck.atLeast("limits.max_waiters", l.MaxWaiters, 1)
	ck.atLeast("limits.body_cache", int(l.BodyCache), 1)

	// [retention]
	ck.positive("retention.sweep_interval", c.Retention.SweepInterval)

	// [log]
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		ck.bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		ck.bad("log.format", "%q: want text or json", c.Log.Format)
	}

	// [http]
	h := c.HTTP
	if h.Listen != "" {
		if host, ok := ck.hostPort("http.listen", h.Listen); ok && !isLoopback(host) && h.Token == "" && h.TokenFile == "" {
			ck.bad("http.listen", "%q is not a loopback address: set http.token or http.token_file so that the API is not open to all", h.Listen)
		}
	}
	if h.Token != "" && h.TokenFile != "" {
		ck.bad("http.token", "give http.token or http.token_file, not both")
	}
	if h.Token == Masked {
		ck.bad("http.token", "%q is the mask printed by titanic config, not a token", Masked)
	} else if strings.ContainsAny(h.Token, " \t\r\n") {
		ck.bad("http.token", "a bearer token has no white space")
	}

	// [security]
	for _, a := range c.Security.AdminFrom {
		if _, err := ParseAdminFrom(a); err != nil {
			ck.bad("security.admin_from", "%v", err)
		}
	}
	if c.Security.Curve {
		if c.Security.SecretKeyFile == "" {
			ck.bad("security.secret_key_file", "security.curve needs this node's secret key file (titanic keygen makes one)")
		}
		if c.Security.PublicKeysDir == "" {
			ck.bad("security.public_keys_dir", "security.curve needs the directory of allowed public keys")
		}
	}

	c.validateReplication(&ck)
	c.validatePeering(&ck)

	// [notify]
	if c.Notify.Listen != "" {
		ck.endpoint("notify.listen", c.Notify.Listen)
	}

	c.validateClashes(&ck)
	return errors.Join(ck.errs...)
}

func (c Config) validateReplication(ck *checker) {
	r, p := c.Raft, c.Pair
	if r.Enabled && p.Role != "" {
		ck.bad("raft.enabled", "group mode (--raft) and pair mode (--pair %s) are exclusive", p.Role)
	}
	switch p.Role {
	case "", "primary", "backup":
	default:
		ck.bad("pair.role", "%q: want primary or backup (or empty: not a pair)", p.Role)
	}
	if r.Enabled {
		if r.NodeID == "" {
			ck.bad("raft.node_id", "group mode needs this node's ID")
		}
		if r.Bind == "" {
			ck.bad("raft.bind", "group mode needs the raft address HOST:PORT")
		}
	}
	if p.KeepForks == 0 || p.KeepForks < Unlimited {
		ck.bad("pair.keep_forks", "%d: want -1 (keep every fork) or at least 1", p.KeepForks)
	}
	if p.Role != "" {
		if len(r.Peers) > 0 {
			ck.bad("raft.peers", "is for group mode; pair mode uses pair.peer")
		}
		if r.NodeID != "" {
			ck.bad("raft.node_id", "is for group mode; pair mode's IDs are primary and backup")
		}
	}
	if !r.Enabled && p.Role == "" {
		for _, s := range []setting{{"raft.node_id", r.NodeID != ""}, {"raft.bind", r.Bind != ""}, {"raft.advertise", r.Advertise != ""}, {"raft.peers", len(r.Peers) > 0}} {
			if s.set {
				ck.bad(s.name, "needs group mode (raft.enabled, --raft) or pair mode (pair.role, --pair)")
			}
		}
		for _, s := range []setting{{"pair.peer", p.Peer != ""}, {"pair.peer_state", p.PeerState != ""}, {"pair.peer_raft", p.PeerRaft != ""}, {"pair.peer_listen", p.PeerListen != ""}, {"pair.state_listen", p.StateListen != ""}} {
			if s.set {
				ck.bad(s.name, "needs pair mode (pair.role, --pair primary or backup)")
			}
		}
	}
	if r.Bind != "" {
		if host, ok := ck.hostPort("raft.bind", r.Bind); ok && r.Advertise == "" && isUnspecified(host) {
			ck.bad("raft.bind", "%q is not an address peers can dial: set raft.advertise", r.Bind)
		}
	}
	if r.Advertise != "" {
		if host, ok := ck.hostPort("raft.advertise", r.Advertise); ok && isUnspecified(host) {
			ck.bad("raft.advertise", "%q is not an address peers can dial", r.Advertise)
		}
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, peer := range r.Peers {
		id, addr, ok := strings.Cut(peer, "=")
		if !ok || id == "" || addr == "" {
			ck.bad("raft.peers", "%q is not ID=HOST:PORT", peer)
			continue
		}
		if _, ok := ck.hostPort("raft.peers", addr); !ok {
			continue
		}
		if ids[id] {
			ck.bad("raft.peers", "ID %q appears twice", id)
		}
		if addrs[addr] {
			ck.bad("raft.peers", "address %q appears twice", addr)
		}
		ids[id], addrs[addr] = true, true
	}
	if r.Enabled && r.NodeID != "" && len(r.Peers) > 0 && !ids[r.NodeID] {
		ck.bad("raft.peers", "the initial voters must include this node (raft.node_id %q)", r.NodeID)
	}
	ck.positive("raft.timeout", r.Timeout)
	ck.positive("raft.snapshot_interval", r.SnapshotInterval)
	ck.atLeast("raft.snapshot_threshold", r.SnapshotThreshold, 1)
	ck.atLeast("raft.trailing_logs", r.TrailingLogs, 1)

	if (p.Role == "primary" || p.Role == "backup") && p.Peer == "" && (p.PeerState == "" || p.PeerRaft == "") {
		ck.bad("pair.peer", "pair mode needs the other host (or both pair.peer_state and pair.peer_raft)")
	}
	if p.Peer != "" {
		if strings.Contains(p.Peer, "://") || strings.ContainsAny(p.Peer, "/ ") {
			ck.bad("pair.peer", "%q: want a host name or address, not an endpoint", p.Peer)
		} else if _, _, err := net.SplitHostPort(p.Peer); err == nil {
			ck.bad("pair.peer", "%q: want the host alone; the ports are 5556 (state) and 7000 (raft), or give pair.peer_state and pair.peer_raft", p.Peer)
		}
	}
	if p.PeerState != "" {
		ck.endpoint("pair.peer_state", p.PeerState)
	}
	if p.PeerRaft != "" {
		ck.hostPort("pair.peer_raft", p.PeerRaft)
	}
	if p.StateListen != "" {
		ck.endpoint("pair.state_listen", p.StateListen)
	}
	if p.PeerListen != "" {
		ck.endpoint("pair.peer_listen", p.PeerListen)
	}
	ck.positive("pair.heartbeat", p.Heartbeat)
}

// maxPeeringName is ZeroMQ's bound on a routing id, which a peering name
// is on the cloud sockets: a longer own name fails at start-up ("peering
// identity: invalid argument"), and a longer peer's name never matches.
const maxPeeringName = 255

func (c Config) validatePeering(ck *checker) {
	pe := c.Peering
	if pe.Name == "" {
		for _, s := range []setting{{"peering.cloud_listen", pe.CloudListen != ""}, {"peering.state_listen", pe.StateListen != ""}, {"peering.peers", len(pe.Peers) > 0}} {
			if s.set {
				ck.bad(s.name, "needs peering.name (this cluster's name)")
			}
		}
		return
	}
	switch {
	case !validName(pe.Name):
		ck.bad("peering.name", "%q: want letters, digits, '.', '_' or '-'", pe.Name)
	case len(pe.Name) > maxPeeringName:
		ck.bad("peering.name", "%d bytes: at most %d (the name is the routing id of the cloud sockets)", len(pe.Name), maxPeeringName)
	}
	if pe.CloudListen == "" {
		ck.bad("peering.cloud_listen", "peering needs the endpoint peers send work to")
	} else {
		ck.endpoint("peering.cloud_listen", pe.CloudListen)
	}
	if pe.StateListen == "" {
		ck.bad("peering.state_listen", "peering needs the endpoint publishing this cluster's capacity")
	} else {
		ck.endpoint("peering.state_listen", pe.StateListen)
	}
	seen := map[string]bool{}
	for i, p := range pe.Peers {
		switch {
		case !validName(p.Name):
			ck.bad("peering.peers", "peer %d: name %q: want letters, digits, '.', '_' or '-'", i+1, p.Name)
		case len(p.Name) > maxPeeringName:
			ck.bad("peering.peers", "peer %d: name of %d bytes: at most %d (the peer's routing id)", i+1, len(p.Name), maxPeeringName)
		case p.Name == pe.Name:
			ck.bad("peering.peers", "peer %q has this cluster's own name", p.Name)
		case seen[p.Name]:
			ck.bad("peering.peers", "peer %q appears twice", p.Name)
		}
		seen[p.Name] = true
		if p.Cloud == "" || p.State == "" {
			ck.bad("peering.peers", "peer %q needs both cloud and state endpoints", p.Name)
			continue
		}
		ck.endpoint("peering.peers", p.Cloud)
		ck.endpoint("peering.peers", p.State)
	}
	keyed := 0
	for _, p := range pe.Peers {
		if p.Key != "" {
			keyed++
		}
	}
	switch {
	case keyed > 0 && !c.Security.Curve:
		ck.bad("peering.peers", "a peer's key needs security.curve (--curve): the links are plain without it")
	case keyed > 0 && keyed < len(pe.Peers):
		ck.bad("peering.peers", "%d of %d peers have a key: with security.curve the peering links are CURVE for every peer (each with its key) or for none", keyed, len(pe.Peers))
	}
}

// validateClashes refuses two listeners of this node on one TCP port.
func (c Config) validateClashes(ck *checker) {
	type listener struct{ name, addr, host, port string }
	var ls []listener
	add := func(name, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "*" || port == "0" {
			return
		}
		if isUnspecified(host) {
			host = "*"
		}
		ls = append(ls, listener{name, addr, host, port})
	}
	for _, ep := range c.Broker.Listen {
		if rest, ok := strings.CutPrefix(ep, "tcp://"); ok {
			add("broker.listen", rest)
		}
	}
	for _, l := range []struct{ name, ep string }{
		{"pair.state_listen", c.Pair.StateListen},
		{"peering.cloud_listen", c.Peering.CloudListen},
		{"peering.state_listen", c.Peering.StateListen},
		{"notify.listen", c.Notify.Listen},
	} {
		if rest, ok := strings.CutPrefix(l.ep, "tcp://"); ok {
			add(l.name, rest)
		}
	}
	if c.HTTP.Listen != "" {
		add("http.listen", c.HTTP.Listen)
	}
	if c.Raft.Bind != "" {
		add("raft.bind", c.Raft.Bind)
	}
	for i, a := range ls {
		for _, b := range ls[:i] {
			// A wildcard bind takes the port on every address.
			if a.port == b.port && (a.host == b.host || a.host == "*" || b.host == "*") {
				ck.bad(a.name, "%s uses the same TCP port as %s (%s)", a.addr, b.name, b.addr)
				break
			}
		}
	}
}

// setting is whether a setting is given, for settings that need another.
type setting struct {
	name string
	set  bool
}

// checker collects the problems found.
type checker struct {
	errs   []error
	origin origins
}

func (ck *checker) bad(name, format string, args ...any) {
	where := name
	f, ok := byName[name]
	switch from, set := ck.origin[name]; {
	case set && strings.HasPrefix(from, "flag "):
		where += " (" + from + ")"
	case ok && set:
		where += " (--" + f.flag + "; " + from + ")"
	case ok:
		where += " (--" + f.flag + ")"
	case set:
		where += " (" + from + ")"
	}
	ck.errs = append(ck.errs, fmt.Errorf("%w: %s: %s", ErrInvalid, where, fmt.Sprintf(format, args...)))
}

func (ck *checker) positive(name string, d time.Duration) {
	if d <= 0 {
		ck.bad(name, "%s: must be greater than 0", formatDuration(d))
	}
}

// limit checks a setting that may be unlimited: -1 (Unlimited), or 0 as
// older versions wrote it, or a bound.
func (ck *checker) limit(name string, n int64) {
	if n < Unlimited {
		ck.bad(name, "%d: want -1 (no limit) or a limit", n)
	}
}

func (ck *checker) atLeast(name string, n, least int) {
	if n < least {
		ck.bad(name, "%d: must be at least %d", n, least)
	}
}

// endpoint checks a ZeroMQ endpoint to bind: tcp://HOST:PORT (HOST may
// be * to bind every interface, PORT * for any), ipc://PATH or
// inproc://NAME, as zsock.CheckEndpoint does for clients and workers.
func (ck *checker) endpoint(name, ep string) {
	if err := zsock.CheckEndpoint(ep, true); err != nil {
		ck.bad(name, "%v", err)
	}
}

// hostPort checks HOST:PORT and returns the host.
func (ck *checker) hostPort(name, addr string) (string, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.Contains(addr, "://") || !validPort(port, false) {
		ck.bad(name, "%q: want HOST:PORT", addr)
		return "", false
	}
	return host, true
}

func validPort(p string, star bool) bool {
	if star && p == "*" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isUnspecified(host string) bool {
	if host == "" || host == "*" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ParseAdminFrom reads one security.admin_from entry: a network (CIDR) or
// one address.
func ParseAdminFrom(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want a network (10.0.0.0/8) or an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
