// Package config is the single source of truth for the settings of
// `titanic broker`: one Config struct, grouped in sections, read from
//
//  1. built-in defaults (Default), so the broker runs with no file at all,
//  2. a TOML file (--config FILE, or $TITANIC_CONFIG),
//  3. environment variables TITANIC_<SECTION>_<KEY> (TITANIC_BROKER_LISTEN),
//  4. command-line flags (--listen), of which only those given override,
//
// each overriding the one before. The flags, the environment names, the
// effective-config printout (TOML) and the README reference table
// (Reference) are all generated from the struct tags below, so they cannot
// drift apart.
//
// Value formats, the same in the file, the environment and on the command
// line (the file may also use native TOML types):
//   - durations are Go duration strings: "2.5s", "500ms", "168h";
//     a bare TOML integer is refused (it would mean nanoseconds);
//   - sizes are bytes, as an integer or with a unit: 1048576, "64MiB",
//     "512KiB", "1GiB", "10MB" (KB/MB/GB/TB are powers of 1000,
//     KiB/MiB/GiB/TiB powers of 1024);
//   - lists are TOML arrays in the file and comma-separated elsewhere;
//   - peering peers are tables {name, cloud, state} in the file and
//     NAME=CLOUD+STATE,... elsewhere.
//
// Struct tags of a setting: toml (the key), flag (the flag name), usage
// (one line for --help and the reference), secret ("true": masked when
// printed). The environment name is derived: TITANIC_<SECTION>_<KEY> in
// upper case.
package config

import (
	"errors"
	"time"
)

// ErrInvalid is wrapped by every error about a bad setting: an unknown key,
// a value of the wrong type or out of range, settings that contradict each
// other.
var ErrInvalid = errors.New("invalid configuration")

// Config is every setting of the broker. The zero value is not useful: start
// from Default.
type Config struct {
	Broker    BrokerSection    `toml:"broker" doc:"the Majordomo broker: client and worker endpoints, heartbeats, leases"`
	Store     StoreSection     `toml:"store" doc:"the data file"`
	Queue     QueueSection     `toml:"queue" doc:"the durable Titanic service: attempts and commits"`
	Limits    LimitsSection    `toml:"limits" doc:"self-defence against hostile or runaway clients; -1 means no limit where noted (0, as older versions wrote it, too)"`
	Retention RetentionSection `toml:"retention" doc:"what happens to tickets nobody closes"`
	Log       LogSection       `toml:"log" doc:"logging (log/slog) to standard error"`
	HTTP      HTTPSection      `toml:"http" doc:"HTTP listener: metrics, health, JSON API and dashboard"`
	Security  SecuritySection  `toml:"security" doc:"CURVE encryption and the ZAP allowlist of client, worker, peer and pair keys"`
	Raft      RaftSection      `toml:"raft" doc:"group mode: this node is a member of a raft group of 3 or 5; the leader serves"`
	Pair      PairSection      `toml:"pair" doc:"pair mode: primary or backup of a Binary Star pair on two hosts"`
	Peering   PeeringSection   `toml:"peering" doc:"peered clusters: brokers that pass work to each other (cloud) and share capacity (state)"`
	Notify    NotifySection    `toml:"notify" doc:"ticket notifications published to subscribers"`
}

// BrokerSection is [broker].
type BrokerSection struct {
	Listen          []string      `toml:"listen" flag:"listen" usage:"ZeroMQ endpoints to bind for clients and workers (tcp://HOST:PORT)"`
	Heartbeat       time.Duration `toml:"heartbeat" flag:"heartbeat" usage:"MDP heartbeat interval"`
	Liveness        int           `toml:"liveness" flag:"liveness" usage:"missed heartbeats before a worker is gone"`
	LeaseTimeout    time.Duration `toml:"lease_timeout" flag:"lease-timeout" usage:"how long a busy worker that does not heartbeat may stay silent"`
	RequestExpiry   time.Duration `toml:"request_expiry" flag:"request-expiry" usage:"how long a plain MDP request waits for a worker"`
	DrainTimeout    time.Duration `toml:"drain_timeout" flag:"drain-timeout" usage:"on SIGTERM or SIGINT, how long to wait for accepted work to be committed and answered"`
	PresenceTimeout time.Duration `toml:"presence_timeout" flag:"presence-timeout" usage:"an identified client silent this long (no titanic.hello) counts as disconnected"`
}

// StoreSection is [store].
type StoreSection struct {
	Dir         string        `toml:"dir" flag:"data" usage:"directory of the data file (created if missing)"`
	LockTimeout time.Duration `toml:"lock_timeout" flag:"lock-timeout" usage:"how long to wait for the data file's lock held by another process"`
	MaxBatch    int           `toml:"max_batch" flag:"store-max-batch" usage:"most ops one commit takes (one write transaction; replicated: one raft entry)"`
	// MaxBatchBytes bounds a commit's bytes beside MaxBatch: replicated,
	// a commit is one raft entry, which must stay far below what raft
	// sends within its transport timeout (see store.DefaultMaxBatchBytes).
	MaxBatchBytes Size `toml:"max_batch_bytes" flag:"store-max-batch-bytes" usage:"most bytes one commit takes (replicated: one raft entry); a single larger op commits alone"`
	// Linger lets a commit wait for company when it would hold only
	// what workers did (see store.Options.Linger).
	Linger    time.Duration `toml:"linger" flag:"store-linger" usage:"how long workers' replies and dispatch marks, which nobody waits on, may wait for more to commit with (a submit or a close ends the wait at once); 0: commit at once"`
	NoSync    bool          `toml:"no_sync" flag:"no-sync" usage:"UNSAFE: skip the fsync of each commit (acknowledged tickets can be lost); tests and benchmarks only"`
	BackupDir string        `toml:"backup_dir" flag:"backup-dir" usage:"where titanic backup writes snapshots on this host; empty: DIR/backups"`
}

// QueueSection is [queue]: the Titanic service.
type QueueSection struct {
	MaxAttempts     int           `toml:"max_attempts" flag:"max-attempts" usage:"dispatches per ticket before it fails"`
	BackoffBase     time.Duration `toml:"backoff_base" flag:"backoff-base" usage:"pause before the second attempt of a ticket whose first failed; it doubles with each failed attempt, up to backoff_max, with equal jitter (half to all of it); negative (\"-1s\"): no pause"`
	BackoffMax      time.Duration `toml:"backoff_max" flag:"backoff-max" usage:"longest pause between two attempts of a ticket"`
	NoWorkerTimeout time.Duration `toml:"no_worker_timeout" flag:"no-worker-timeout" usage:"how long a ticket waits for its service to have a worker before it fails; negative (\"-1s\"), the default: for ever, as the reference Titanic (0, too)"`
	Readers         int           `toml:"readers" flag:"readers" usage:"goroutines serving lookups (status, reply, list)"`
	// MaxBatch is kept so that config files and command lines of earlier
	// releases still load: the service's own commit queue is gone (the
	// store's is the only one, store.max_batch), and a value is ignored
	// with a warning.
	MaxBatch int `toml:"max_batch" flag:"queue-max-batch" usage:"ignored (earlier releases: most ops of one commit; see store.max_batch)"`
	// Services overrides the retry policy per service.
	Services []ServiceRetry `toml:"services" flag:"service-retry" usage:"per-service retry policy: tables {name, max_attempts, backoff_base, backoff_max}, a zero or missing field keeps the setting above; on the command line NAME=ATTEMPTS/BASE/MAX,... (an empty part keeps it)"`
}

// ServiceRetry is one service's retry policy in [queue] services; zero
// fields keep the broker's (max_attempts, backoff_base, backoff_max). A
// submit's own policy overrides both.
type ServiceRetry struct {
	Name        string        `toml:"name"`
	MaxAttempts int           `toml:"max_attempts"`
	BackoffBase time.Duration `toml:"backoff_base"`
	BackoffMax  time.Duration `toml:"backoff_max"`
}

// LimitsSection is [limits].
type LimitsSection struct {
	MaxMessageSize    Size    `toml:"max_message_size" flag:"max-message-size" usage:"largest ZeroMQ frame accepted (ZMQ_MAXMSGSIZE), on the client endpoint and on the peering sockets alike; a larger one drops the connection; a message larger in all (plus 64 KiB) is dropped; -1: no limit"`
	MaxBody           Size    `toml:"max_body" flag:"max-body" usage:"largest request body (all frames) a submit may carry; -1: no limit"`
	PerClientInflight int     `toml:"per_client_inflight" flag:"per-client-inflight" usage:"requests one client may have in flight; beyond it: busy, retry later; -1: no limit"`
	SubmitRate        float64 `toml:"submit_rate" flag:"submit-rate" usage:"submits per second per client; beyond it: busy, retry later; -1: no limit"`
	SubmitBurst       int     `toml:"submit_burst" flag:"submit-burst" usage:"submits a client may send at once above submit_rate"`
	DiskQuota         Size    `toml:"disk_quota" flag:"disk-quota" usage:"largest data file; beyond it submits are refused while lookups and replies go on; -1: no limit (only the disk's size)"`
	DiskReserve       Size    `toml:"disk_reserve" flag:"disk-reserve" usage:"free space kept on the data directory's file system (and the raft directory's), at most 5% of its size: below it submits are refused until space returns, while replies, closes and lookups go on; -1: not checked"`
	MaxQueue          int     `toml:"max_queue" flag:"max-queue" usage:"plain (non-durable) MDP requests queued per service"`
	MaxQueuedOps      int     `toml:"max_queued_ops" flag:"max-queued-ops" usage:"submits and closes waiting for the next commit; beyond it: busy"`
	MaxQueuedReads    int     `toml:"max_queued_reads" flag:"max-queued-reads" usage:"lookups waiting for a reader; beyond it: busy"`
	MaxWaiters        int     `toml:"max_waiters" flag:"max-waiters" usage:"reply --wait requests parked at once"`
	BodyCache         Size    `toml:"body_cache" flag:"body-cache" usage:"request bodies kept in memory for dispatch; the rest is read back from the data file"`
}

// RetentionSection is [retention].
type RetentionSection struct {
	DoneTTL       time.Duration `toml:"done_ttl" flag:"done-ttl" usage:"done and failed tickets nobody closes are deleted this long after they finish; negative (\"-1s\"): kept until closed (0, as older versions wrote it, too)"`
	SweepInterval time.Duration `toml:"sweep_interval" flag:"sweep-interval" usage:"how often expired tickets are deleted"`
}

// LogSection is [log].
type LogSection struct {
	Level  string `toml:"level" flag:"log-level" usage:"debug, info, warn or error"`
	Format string `toml:"format" flag:"log-format" usage:"text or json"`
}

// HTTPSection is [http].
type HTTPSection struct {
	Listen    string `toml:"listen" flag:"http-listen" usage:"HOST:PORT of the HTTP listener; empty: no listener; a non-loopback address needs a token. The default one, if its port is taken, is skipped with a warning; one set explicitly must bind"`
	Token     string `toml:"token" flag:"http-token" secret:"true" usage:"bearer token the HTTP API and dashboard require (Authorization: Bearer TOKEN); empty: none"`
	TokenFile string `toml:"token_file" flag:"http-token-file" usage:"file holding the bearer token, instead of token"`
}

// SecuritySection is [security].
type SecuritySection struct {
	Curve         bool     `toml:"curve" flag:"curve" usage:"CURVE-encrypt client, worker and pair (Binary Star) links, and peering links whose peers have keys, and admit only allowed keys (not the raft transport or notification links)"`
	SecretKeyFile string   `toml:"secret_key_file" flag:"secret-key-file" usage:"this node's CURVE secret key (made by titanic keygen)"`
	PublicKeysDir string   `toml:"public_keys_dir" flag:"public-keys-dir" usage:"directory of allowed public key files (the allowlist), reloaded on SIGHUP"`
	AdminFrom     []string `toml:"admin_from" flag:"admin-from" usage:"networks (CIDR) or addresses, beside this host and the cluster members' hosts, from which cluster changes (titanic cluster join/leave/forget) and titanic backup are taken"`
}

// RaftSection is [raft]: group mode. Bind and Advertise also serve pair
// mode.
type RaftSection struct {
	Enabled           bool          `toml:"enabled" flag:"raft" usage:"group mode: this node is a member of a raft group (3 or 5 nodes); the leader serves"`
	NodeID            string        `toml:"node_id" flag:"node-id" usage:"raft node ID (group mode; pair mode uses primary and backup)"`
	Bind              string        `toml:"bind" flag:"raft-bind" usage:"raft transport address HOST:PORT (pair mode default: the listen host, port 7000)"`
	Advertise         string        `toml:"advertise" flag:"raft-advertise" usage:"raft address peers dial, if not bind"`
	Peers             []string      `toml:"peers" flag:"peers" usage:"group mode: initial voters ID=HOST:PORT including this node; a node with no raft state forms the group from them (empty: join later with titanic cluster join)"`
	Timeout           time.Duration `toml:"timeout" flag:"raft-timeout" usage:"raft heartbeat and election timeout"`
	SnapshotInterval  time.Duration `toml:"snapshot_interval" flag:"raft-snapshot-interval" usage:"how often raft checks whether to snapshot"`
	SnapshotThreshold int           `toml:"snapshot_threshold" flag:"raft-snapshot-threshold" usage:"log entries since the last snapshot that make a new one"`
	TrailingLogs      int           `toml:"trailing_logs" flag:"raft-trailing-logs" usage:"log entries kept after a snapshot, for followers that lag"`
}

// PairSection is [pair]: Binary Star pair mode.
type PairSection struct {
	Role        string        `toml:"role" flag:"pair" usage:"pair mode: primary or backup; empty: not a pair"`
	Peer        string        `toml:"peer" flag:"peer" usage:"pair mode: the other host (its state on port 5556, raft on 7000)"`
	PeerState   string        `toml:"peer_state" flag:"peer-state" usage:"pair mode: the peer's state endpoint (default tcp://PEER:5556)"`
	PeerRaft    string        `toml:"peer_raft" flag:"peer-raft" usage:"pair mode: the peer's raft address (default PEER:7000)"`
	PeerListen  string        `toml:"peer_listen" flag:"peer-listen" usage:"pair mode: the peer's client endpoint, where a node that yields after a split brain hands its work over (default tcp://PEER:5555, or the peer_state host on port 5555)"`
	StateListen string        `toml:"state_listen" flag:"state-listen" usage:"pair mode: this node's state endpoint (default the listen host, port 5556)"`
	Heartbeat   time.Duration `toml:"heartbeat" flag:"pair-heartbeat" usage:"pair mode: Binary Star heartbeat; the peer is lost after 2 missed (1s): the passive takes over only after that silence and a client vote; shorter fails over sooner but also on a shorter stall of the active"`
	PeerKey     string        `toml:"peer_key" flag:"peer-key" usage:"pair mode with security.curve: the peer's public key file (made by titanic keygen)"`
	KeepForks   int           `toml:"keep_forks" flag:"keep-forks" usage:"pair mode: how many of the histories this node set aside under DIR/forks after a split brain (each handed over to its peer first) are kept, the newest; -1 keeps every one"`
}

// PeeringSection is [peering].
type PeeringSection struct {
	Name        string `toml:"name" flag:"peering-name" usage:"this cluster's name among its peers (letters, digits, '.', '_', '-'; at most 255 bytes, as each peer's); empty: no peering"`
	CloudListen string `toml:"cloud_listen" flag:"peering-cloud-listen" usage:"endpoint where peers send this cluster work (tcp://HOST:PORT)"`
	StateListen string `toml:"state_listen" flag:"peering-state-listen" usage:"endpoint where this cluster publishes its free capacity (tcp://HOST:PORT)"`
	Peers       []Peer `toml:"peers" flag:"peering-peers" usage:"the other clusters: tables {name, cloud, state, key}; on the command line NAME=CLOUD+STATE[+KEYFILE],...; with security.curve, key (each peer broker's public key file) makes the peering links CURVE, for every peer or none"`
}

// Peer is another cluster of a peering: its name and the endpoints of its
// cloud and state sockets.
type Peer struct {
	Name  string `toml:"name"`
	Cloud string `toml:"cloud"`
	State string `toml:"state"`
	// Key is the peer broker's CURVE public key file (titanic keygen),
	// for security.curve.
	Key string `toml:"key"`
}

// NotifySection is [notify].
type NotifySection struct {
	Listen string `toml:"listen" flag:"notify-listen" usage:"endpoint publishing ticket state changes (ZeroMQ PUB, tcp://HOST:PORT); empty: none"`
}

// Unlimited is the value of a limit (limits.max_message_size, max_body,
// per_client_inflight, submit_rate, disk_quota, disk_reserve) that means "no limit";
// retention.done_ttl takes any negative duration. 0, which older
// versions documented as "no limit" for these keys, keeps that meaning,
// so their files still work; NoLimit tells either apart from a bound.
const Unlimited = -1

// NoLimit reports whether a limit's value means "no limit": -1, or 0 as
// older versions wrote it.
func NoLimit[T int | int64 | float64 | Size | time.Duration](v T) bool { return v <= 0 }

// Default returns the built-in defaults: a single node on localhost with
// its data in ./titanic-data. The timings and bounds are those of
// broker.DefaultConfig, titanic.DefaultConfig, store and replica (a test
// keeps them equal).
func Default() Config {
	return Config{
		Broker: BrokerSection{
			Listen:          []string{"tcp://127.0.0.1:5555"},
			Heartbeat:       2500 * time.Millisecond,
			Liveness:        3,
			LeaseTimeout:    60 * time.Second,
			RequestExpiry:   30 * time.Second,
			DrainTimeout:    5 * time.Second,
			PresenceTimeout: 15 * time.Second,
		},
		Store: StoreSection{
			Dir:           "./titanic-data",
			LockTimeout:   5 * time.Second,
			MaxBatch:      4096,
			MaxBatchBytes: 4 * MiB,
			Linger:        5 * time.Millisecond,
		},
		Queue: QueueSection{
			MaxAttempts:     5,
			BackoffBase:     time.Second,
			BackoffMax:      5 * time.Minute,
			NoWorkerTimeout: -time.Second, // for ever
			Readers:         4,
			Services:        []ServiceRetry{},
		},
		Limits: LimitsSection{
			MaxMessageSize:    32 * MiB,
			MaxBody:           16 * MiB,
			PerClientInflight: 1000,
			SubmitRate:        Unlimited,
			SubmitBurst:       10000,
			MaxQueue:          10000,
			MaxQueuedOps:      100_000,
			MaxQueuedReads:    10_000,
			MaxWaiters:        10_000,
			BodyCache:         64 * MiB,
			DiskQuota:         Unlimited,
			DiskReserve:       256 * MiB,
		},
		Retention: RetentionSection{
			DoneTTL:       7 * 24 * time.Hour,
			SweepInterval: time.Minute,
		},
		Log:      LogSection{Level: "info", Format: "text"},
		HTTP:     HTTPSection{Listen: "127.0.0.1:8080"},
		Security: SecuritySection{AdminFrom: []string{}},
		Raft: RaftSection{
			Peers:             []string{},
			Timeout:           time.Second,
			SnapshotInterval:  2 * time.Minute,
			SnapshotThreshold: 8192,
			TrailingLogs:      10240,
		},
		Pair:    PairSection{Heartbeat: 500 * time.Millisecond, KeepForks: 3},
		Peering: PeeringSection{Peers: []Peer{}},
	}
}

// Mode names the deployment: "single", "group", "pair-primary" or
// "pair-backup".
func (c Config) Mode() string {
	switch {
	case c.Raft.Enabled:
		return "group"
	case c.Pair.Role != "":
		return "pair-" + c.Pair.Role
	}
	return "single"
}
