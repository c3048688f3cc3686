package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newFS() *flag.FlagSet {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := Load(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load with nothing = %+v, want Default()", c)
	}
	if c.Mode() != "single" {
		t.Fatalf("mode %q", c.Mode())
	}
}

// The defaults are those of the packages the settings go to.
func TestDefaultsMatchPackages(t *testing.T) {
	d := Default()
	bd, td, rd := broker.DefaultConfig(), titanic.DefaultConfig(), replica.DefaultConfig()
	eq := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s default %v, package default %v", name, got, want)
		}
	}
	eq("broker.listen", d.Broker.Listen, bd.Endpoints)
	eq("broker.heartbeat", d.Broker.Heartbeat, bd.HeartbeatInterval)
	eq("broker.liveness", d.Broker.Liveness, bd.HeartbeatLiveness)
	eq("broker.lease_timeout", d.Broker.LeaseTimeout, bd.LeaseTimeout)
	eq("broker.request_expiry", d.Broker.RequestExpiry, bd.RequestExpiry)
	eq("limits.max_queue", d.Limits.MaxQueue, bd.MaxQueue)
	eq("limits.max_message_size", int64(d.Limits.MaxMessageSize), bd.MaxMsgSize)
	eq("limits.max_body", int(d.Limits.MaxBody), td.MaxBody)
	eq("limits.per_client_inflight", d.Limits.PerClientInflight, td.PerClientInflight)
	// No per-client rate by default: a pipelined client (submit --from)
	// at full speed is a legitimate bulk load.
	eq("limits.submit_rate", d.Limits.SubmitRate, td.SubmitRate)
	eq("retention.done_ttl", d.Retention.DoneTTL, td.DoneTTL)
	eq("limits.disk_quota", int64(d.Limits.DiskQuota), td.Quota)
	eq("limits.disk_reserve", int64(d.Limits.DiskReserve), td.DiskReserve)
	eq("broker.presence_timeout", d.Broker.PresenceTimeout, td.PresenceTimeout)
	eq("queue.max_attempts", d.Queue.MaxAttempts, td.MaxAttempts)
	eq("queue.backoff_base", d.Queue.BackoffBase, td.BackoffBase)
	eq("queue.backoff_max", d.Queue.BackoffMax, td.BackoffMax)
	// For ever in both, spelled as each spells it.
	if !NoLimit(d.Queue.NoWorkerTimeout) || td.NoWorkerTimeout >= 0 {
		t.Errorf("queue.no_worker_timeout default %v, package default %v: want both for ever", d.Queue.NoWorkerTimeout, td.NoWorkerTimeout)
	}
	eq("queue.readers", d.Queue.Readers, td.Readers)
	eq("limits.max_queued_ops", d.Limits.MaxQueuedOps, td.MaxQueuedOps)
	eq("limits.max_queued_reads", d.Limits.MaxQueuedReads, td.MaxQueuedReads)
	eq("limits.max_waiters", d.Limits.MaxWaiters, td.MaxWaiters)
	eq("limits.body_cache", int(d.Limits.BodyCache), td.BodyCache)
	eq("store.lock_timeout", d.Store.LockTimeout, store.DefaultLockTimeout)
	eq("store.max_batch", d.Store.MaxBatch, store.DefaultMaxBatch)
	eq("store.max_batch_bytes", int(d.Store.MaxBatchBytes), store.DefaultMaxBatchBytes)
	eq("raft.timeout", d.Raft.Timeout, rd.ElectionTimeout)
	eq("raft.snapshot_interval", d.Raft.SnapshotInterval, rd.SnapshotInterval)
	eq("raft.snapshot_threshold", uint64(d.Raft.SnapshotThreshold), rd.SnapshotThreshold)
	eq("raft.trailing_logs", uint64(d.Raft.TrailingLogs), rd.TrailingLogs)
}

// The broker command's flags keep their names.
func TestFlagNames(t *testing.T) {
	fs := newFS()
	d := Default()
	d.RegisterFlags(fs)
	for _, name := range []string{
		"config", "data", "listen", "heartbeat", "liveness", "lease-timeout", "request-expiry", "max-attempts",
		"no-worker-timeout", "log-level", "log-format", "raft", "node-id", "raft-bind", "raft-advertise",
		"peers", "raft-timeout", "pair", "peer", "peer-state", "peer-raft", "peer-listen", "state-listen", "pair-heartbeat",
		"http-listen", "http-token", "max-message-size", "max-body", "per-client-inflight", "submit-rate",
		"disk-quota", "done-ttl", "sweep-interval", "curve", "secret-key-file", "public-keys-dir", "admin-from",
		"peering-name", "peering-cloud-listen", "peering-state-listen", "peering-peers", "notify-listen",
	} {
		if fs.Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
	for env, key := range map[string]string{"TITANIC_BROKER_LISTEN": "broker.listen", "TITANIC_RAFT_NODE_ID": "raft.node_id", "TITANIC_STORE_DIR": "store.dir"} {
		if f := byEnv[env]; f == nil || f.name() != key {
			t.Errorf("%s does not set %s", env, key)
		}
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "titanic.toml", `
[broker]
listen = ["tcp://127.0.0.1:6001", "ipc:///tmp/titanic.sock"]
heartbeat = "1s"
liveness = 4

[store]
dir = "/var/lib/titanic"

[log]
level = "warn"
format = "json"

[limits]
max_body = "1MiB"
`)
	env := []string{
		"PATH=/bin",
		"TITANIC_BROKER_LIVENESS=5",
		"TITANIC_LOG_LEVEL=error",
		"TITANIC_LIMITS_MAX_BODY=2MiB",
		"TITANIC_BIN=/usr/bin/titanic", // not a setting: left alone
	}
	fs := newFS()
	c, err := Load([]string{"--config", file, "--log-level", "debug", "--max-body=3MiB", "extra"}, env, fs)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Broker.Listen = []string{"tcp://127.0.0.1:6001", "ipc:///tmp/titanic.sock"} // file
	want.Broker.Heartbeat = time.Second                                              // file
	want.Store.Dir = "/var/lib/titanic"                                              // file
	want.Log.Format = "json"                                                         // file
	want.Broker.Liveness = 5                                                         // env over file
	want.Log.Level = "debug"                                                         // flag over env over file
	want.Limits.MaxBody = 3 * MiB                                                    // flag over env over file
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%s\nwant\n%s", c.TOML(), want.TOML())
	}
	if got := fs.Args(); len(got) != 1 || got[0] != "extra" {
		t.Fatalf("args %q", got)
	}

	// A flag given with its default value still overrides.
	c, err = Load([]string{"--config", file, "--liveness", "3"}, env, newFS())
	if err != nil {
		t.Fatal(err)
	}
	if c.Broker.Liveness != 3 || c.Log.Level != "error" {
		t.Fatalf("liveness %d level %q", c.Broker.Liveness, c.Log.Level)
	}

	// $TITANIC_CONFIG names the file; --config wins over it.
	other := writeFile(t, "other.toml", "[log]\nlevel = \"warn\"\nformat = \"text\"\n")
	c, err = Load(nil, []string{EnvConfig + "=" + file}, newFS())
	if err != nil || c.Log.Format != "json" {
		t.Fatalf("TITANIC_CONFIG: format %q, %v", c.Log.Format, err)
	}
	c, err = Load([]string{"--config=" + other}, []string{EnvConfig + "=" + file}, newFS())
	if err != nil || c.Log.Format != "text" || c.Log.Level != "warn" {
		t.Fatalf("--config over TITANIC_CONFIG: %+v, %v", c.Log, err)
	}

	// Resolve after the caller parsed the flags itself.
	fs = newFS()
	d := Default()
	d.RegisterFlags(fs)
	if err := fs.Parse([]string{"--raft", "--node-id", "n1", "--raft-bind", "127.0.0.1:7001", "--peers", "n1=127.0.0.1:7001, n2=127.0.0.1:7002"}); err != nil {
		t.Fatal(err)
	}
	c, err = Resolve(fs, []string{"TITANIC_RAFT_NODE_ID=n9"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Raft.Enabled || c.Raft.NodeID != "n1" || !reflect.DeepEqual(c.Raft.Peers, []string{"n1=127.0.0.1:7001", "n2=127.0.0.1:7002"}) || c.Mode() != "group" {
		t.Fatalf("raft %+v", c.Raft)
	}
}

func TestEnvValues(t *testing.T) {
	c := Default()
	err := c.ApplyEnv([]string{
		"TITANIC_BROKER_LISTEN=tcp://127.0.0.1:1,tcp://127.0.0.1:2",
		"TITANIC_SECURITY_CURVE=true",
		"TITANIC_LIMITS_SUBMIT_RATE=2.5",
		"TITANIC_LIMITS_DISK_QUOTA=10 GB",
		"TITANIC_PEERING_PEERS=b=tcp://h:1+tcp://h:2,c=tcp://i:1+tcp://i:2",
		"TITANIC_HTTP_LISTEN=", // empty: disabled
		"TITANIC_RETENTION_DONE_TTL=36h",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Broker.Listen, []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}) || !c.Security.Curve ||
		c.Limits.SubmitRate != 2.5 || c.Limits.DiskQuota != 10e9 || c.HTTP.Listen != "" || c.Retention.DoneTTL != 36*time.Hour {
		t.Fatalf("%s", c.TOML())
	}
	want := []Peer{{Name: "b", Cloud: "tcp://h:1", State: "tcp://h:2"}, {Name: "c", Cloud: "tcp://i:1", State: "tcp://i:2"}}
	if !reflect.DeepEqual(c.Peering.Peers, want) {
		t.Fatalf("peers %+v", c.Peering.Peers)
	}

	envErr := func(kv string) error {
		c := Default()
		return c.ApplyEnv([]string{kv})
	}
	err = envErr("TITANIC_BROKER_LISTN=tcp://127.0.0.1:1")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "TITANIC_BROKER_LISTN") || !strings.Contains(err.Error(), "TITANIC_BROKER_LISTEN?") {
		t.Fatalf("unknown variable: %v", err)
	}
	err = envErr("TITANIC_BROKER_HEARTBEAT=5")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "TITANIC_BROKER_HEARTBEAT") || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"[broker]\nlistn = [\"tcp://127.0.0.1:1\"]\n", []string{`unknown key "broker.listn"`, "did you mean broker.listen?"}},
		{"[brokr]\nlisten = [\"tcp://127.0.0.1:1\"]\nheartbeat = \"1s\"\n", []string{`unknown key "brokr"`, "did you mean [broker]?"}},
		{"[broker]\ndata = \"/x\"\n", []string{`"broker.data"`, "did you mean store.dir?"}},
		{"listen = [\"tcp://127.0.0.1:1\"]\n", []string{`unknown key "listen"`, "broker.listen"}},
		{"[peering]\nname = \"a\"\n[[peering.peers]]\nname = \"b\"\nclod = \"tcp://h:1\"\n", []string{`"peering.peers.clod"`}},
		{"[log]\nlevel = \"info\"\ncolour = true\nfmt = \"json\"\n", []string{`unknown keys "log.colour"`, `"log.fmt"`}},
	} {
		path := writeFile(t, "bad.toml", tc.text)
		_, err := Load([]string{"--config", path}, nil, newFS())
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v does not wrap ErrInvalid", tc.text, err)
			continue
		}
		for _, w := range append(tc.want, path) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tc.text, err, w)
			}
		}
	}
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[broker]\nheartbeat = 5\n", `broker.heartbeat: a duration is a string`},
		{"[broker]\nheartbeat = \"5 seconds\"\n", `5 seconds`},
		{"[broker]\nliveness = \"three\"\n", `broker.liveness`},
		{"[limits]\nmax_body = \"12XB\"\n", `unknown unit "XB"`},
		{"[broker]\nlisten = \"tcp://127.0.0.1:1\"\n", `line 2: broker.listen (--listen) is a list, even of one: write listen = ["tcp://127.0.0.1:1"]`},
		{"[security]\nadmin_from = \"10.0.0.0/8\" # ops\n", `write admin_from = ["10.0.0.0/8"]`},
		{"[broker\n", `line 2`},
	} {
		path := writeFile(t, "bad.toml", tc.text)
		_, err := Load([]string{"--config", path}, nil, newFS())
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: got %v, want ErrInvalid naming the file and %q", tc.text, err, tc.want)
		}
	}
	_, err := Load([]string{"--config", filepath.Join(t.TempDir(), "missing.toml")}, nil, newFS())
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	_, err := Load([]string{"--heartbeat", "soon"}, nil, newFS())
	if err == nil || !strings.Contains(err.Error(), "heartbeat") {
		t.Fatalf("bad duration flag: %v", err)
	}
	_, err = Load([]string{"-h"}, nil, newFS())
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	_, err = Load([]string{"--peering-peers", "b=tcp://h:1"}, nil, newFS())
	if err == nil || !strings.Contains(err.Error(), "NAME=CLOUD+STATE") {
		t.Fatalf("bad peers flag: %v", err)
	}
	_, err = Load([]string{"--max-body", "-5"}, nil, newFS())
	if err == nil {
		t.Fatal("negative size accepted")
	}
}

// [queue] services, in the file and on the command line.
func TestServiceRetryForms(t *testing.T) {
	want := []ServiceRetry{{"mail", 10, 2 * time.Second, 0}, {"pdf", 0, 0, time.Hour}}
	c := Default()
	if err := c.Decode("t.toml", "[queue]\nservices = [\n  {name = \"mail\", max_attempts = 10, backoff_base = \"2s\"},\n  {name = \"pdf\", backoff_max = \"1h\"},\n]\n"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Queue.Services, want) {
		t.Fatalf("from the file: %+v, want %+v", c.Queue.Services, want)
	}
	got, err := parseRetries("mail=10/2s/, pdf=//1h")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("from a flag: %+v %v, want %+v", got, err, want)
	}
	if _, err := parseRetries("mail=10/2s"); err == nil {
		t.Fatal("two parts taken")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string // "" means valid
	}{
		{"negative heartbeat", func(c *Config) { c.Broker.Heartbeat = -time.Second }, "broker.heartbeat (--heartbeat): -1s: must be greater than 0"},
		{"zero lease", func(c *Config) { c.Broker.LeaseTimeout = 0 }, "broker.lease_timeout (--lease-timeout): 0s: must be greater than 0"},
		{"negative ttl", func(c *Config) { c.Retention.DoneTTL = -time.Second }, ""},
		{"zero ttl", func(c *Config) { c.Retention.DoneTTL = 0 }, ""},
		{"no worker timeout for ever", func(c *Config) { c.Queue.NoWorkerTimeout = -time.Second }, ""},
		{"no worker timeout", func(c *Config) { c.Queue.NoWorkerTimeout = time.Hour }, ""},
		{"no worker timeout in ns", func(c *Config) { c.Queue.NoWorkerTimeout = 2 }, "queue.no_worker_timeout (--no-worker-timeout): 2ns: under 1ms"},
		{"liveness", func(c *Config) { c.Broker.Liveness = 0 }, "broker.liveness (--liveness): 0: must be at least 1"},
		{"attempts", func(c *Config) { c.Queue.MaxAttempts = 0 }, "queue.max_attempts"},
		{"no backoff", func(c *Config) { c.Queue.BackoffBase = -time.Second }, ""},
		{"service retry", func(c *Config) {
			c.Queue.Services = []ServiceRetry{{Name: "mail", MaxAttempts: 9, BackoffMax: time.Hour}}
		}, ""},
		{"service retry in ns", func(c *Config) { c.Queue.Services = []ServiceRetry{{Name: "mail", BackoffBase: 2}} }, "queue.services"},
		{"service retry twice", func(c *Config) { c.Queue.Services = []ServiceRetry{{Name: "a"}, {Name: "a"}} }, "appears twice"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, `log.level (--log-level): "verbose": want debug, info, warn or error`},
		{"log level case", func(c *Config) { c.Log.Level = "WARN" }, ""},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format (--log-format): "xml": want text or json`},
		{"no listen", func(c *Config) { c.Broker.Listen = nil }, "broker.listen (--listen): at least one endpoint"},
		{"listen no scheme", func(c *Config) { c.Broker.Listen = []string{"127.0.0.1:5555"} }, `broker.listen (--listen): "127.0.0.1:5555": want an endpoint tcp://HOST:PORT`},
		{"listen no port", func(c *Config) { c.Broker.Listen = []string{"tcp://127.0.0.1"} }, `"tcp://127.0.0.1": want tcp://HOST:PORT`},
		{"listen bad port", func(c *Config) { c.Broker.Listen = []string{"tcp://127.0.0.1:99999"} }, `want tcp://HOST:PORT`},
		{"listen wildcard", func(c *Config) { c.Broker.Listen = []string{"tcp://*:5555", "ipc:///run/titanic.sock"} }, ""},
		{"listen udp", func(c *Config) { c.Broker.Listen = []string{"udp://127.0.0.1:5555"} }, "want an endpoint"},
		{"pair role", func(c *Config) { c.Pair.Role = "master"; c.Pair.Peer = "b" }, `pair.role (--pair): "master": want primary or backup`},
		{"pair no peer", func(c *Config) { c.Pair.Role = "primary" }, "pair.peer (--peer): pair mode needs the other host"},
		{"pair ok", func(c *Config) { c.Pair.Role = "backup"; c.Pair.Peer = "10.0.0.1" }, ""},
		{"pair peer endpoint", func(c *Config) { c.Pair.Role = "primary"; c.Pair.Peer = "tcp://b:5556" }, "want a host name or address, not an endpoint"},
		{"pair peer port", func(c *Config) { c.Pair.Role = "primary"; c.Pair.Peer = "b:5556" }, "want the host alone"},
		{"pair peer_raft", func(c *Config) {
			c.Pair.Role = "primary"
			c.Pair.PeerState = "tcp://b:5556"
			c.Pair.PeerRaft = "b"
		}, `pair.peer_raft (--peer-raft): "b": want HOST:PORT`},
		{"pair without role", func(c *Config) { c.Pair.Peer = "b" }, "pair.peer (--peer): needs pair mode"},
		{"raft and pair", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "127.0.0.1:7000"
			c.Pair.Role, c.Pair.Peer = "primary", "b"
		}, "raft.enabled (--raft): group mode (--raft) and pair mode (--pair primary) are exclusive"},
		{"raft no id", func(c *Config) { c.Raft.Enabled, c.Raft.Bind = true, "127.0.0.1:7000" }, "raft.node_id (--node-id): group mode needs this node's ID"},
		{"raft no bind", func(c *Config) { c.Raft.Enabled, c.Raft.NodeID = true, "n1" }, "raft.bind (--raft-bind): group mode needs"},
		{"raft unadvertisable", func(c *Config) { c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "0.0.0.0:7000" }, "set raft.advertise"},
		{"raft advertised", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind, c.Raft.Advertise = true, "n1", "0.0.0.0:7000", "n1.example:7000"
		}, ""},
		{"raft peers syntax", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "127.0.0.1:7001"
			c.Raft.Peers = []string{"n1:127.0.0.1:7001"}
		}, `raft.peers (--peers): "n1:127.0.0.1:7001" is not ID=HOST:PORT`},
		{"raft peers address", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "127.0.0.1:7001"
			c.Raft.Peers = []string{"n1=127.0.0.1"}
		}, `raft.peers (--peers): "127.0.0.1": want HOST:PORT`},
		{"raft peers without self", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "127.0.0.1:7001"
			c.Raft.Peers = []string{"n2=127.0.0.1:7002", "n3=127.0.0.1:7003"}
		}, `must include this node (raft.node_id "n1")`},
		{"raft peers twice", func(c *Config) {
			c.Raft.Enabled, c.Raft.NodeID, c.Raft.Bind = true, "n1", "127.0.0.1:7001"
			c.Raft.Peers = []string{"n1=127.0.0.1:7001", "n1=127.0.0.1:7002"}
		}, `ID "n1" appears twice`},
		{"peering key without curve", func(c *Config) {
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "tcp://h:1", State: "tcp://h:2", Key: "/k/b.pub"}}}
		}, "a peer's key needs security.curve"},
		{"peering keys for some", func(c *Config) {
			c.Security.Curve = true
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "tcp://h:1", State: "tcp://h:2", Key: "/k/b.pub"}, {Name: "c", Cloud: "tcp://h:3", State: "tcp://h:4"}}}
		}, "1 of 2 peers have a key"},
		{"node id without raft", func(c *Config) { c.Raft.NodeID = "n1" }, "raft.node_id (--node-id): needs group mode"},
		{"pair with peers", func(c *Config) {
			c.Pair.Role, c.Pair.Peer = "primary", "b"
			c.Raft.Peers = []string{"a=127.0.0.1:7000"}
		}, "raft.peers (--peers): is for group mode"},
		{"raft timeout", func(c *Config) { c.Raft.Timeout = -time.Millisecond }, "raft.timeout (--raft-timeout)"},
		{"pair heartbeat", func(c *Config) { c.Pair.Heartbeat = 0 }, "pair.heartbeat (--pair-heartbeat)"},
		{"http exposed", func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080" }, `http.listen (--http-listen): "0.0.0.0:8080" is not a loopback address`},
		{"http exposed with token", func(c *Config) { c.HTTP.Listen, c.HTTP.Token = ":8080", "abc" }, ""},
		{"http localhost", func(c *Config) { c.HTTP.Listen = "localhost:9000" }, ""},
		{"http off", func(c *Config) { c.HTTP.Listen = "" }, ""},
		{"http bad", func(c *Config) { c.HTTP.Listen = "http://127.0.0.1:8080" }, `http.listen (--http-listen): "http://127.0.0.1:8080": want HOST:PORT`},
		{"http two tokens", func(c *Config) { c.HTTP.Token, c.HTTP.TokenFile = "abc", "/t" }, "http.token or http.token_file, not both"},
		{"admin_from not a network", func(c *Config) { c.Security.AdminFrom = []string{"10.0.0.0/8", "a.b.c"} }, "security.admin_from"},
		{"http masked token", func(c *Config) { c.HTTP.Token = Masked }, "is the mask printed by titanic config"},
		{"curve without keys", func(c *Config) { c.Security.Curve = true }, "security.secret_key_file (--secret-key-file): security.curve needs"},
		{"curve", func(c *Config) { c.Security.Curve, c.Security.SecretKeyFile, c.Security.PublicKeysDir = true, "k", "d" }, ""},
		{"small frames", func(c *Config) { c.Limits.MaxMessageSize = 100 }, "limits.max_message_size (--max-message-size): 100: want -1 (no limit) or at least 1KiB"},
		{"unlimited frames", func(c *Config) { c.Limits.MaxMessageSize, c.Limits.MaxBody = Unlimited, Unlimited }, ""},
		{"unlimited frames as older versions wrote it", func(c *Config) { c.Limits.MaxMessageSize, c.Limits.MaxBody = 0, 0 }, ""},
		{"unlimited rate", func(c *Config) { c.Limits.SubmitRate = Unlimited }, ""},
		{"negative rate", func(c *Config) { c.Limits.SubmitRate = -2 }, "limits.submit_rate (--submit-rate): -2: want -1 (no limit)"},
		{"negative inflight", func(c *Config) { c.Limits.PerClientInflight = -5 }, "limits.per_client_inflight (--per-client-inflight): -5: want -1 (no limit) or a limit"},
		{"unlimited inflight", func(c *Config) { c.Limits.PerClientInflight = Unlimited }, ""},
		{"rate without burst", func(c *Config) { c.Limits.SubmitRate, c.Limits.SubmitBurst = 100, 0 }, "a submit rate needs a burst"},
		{"no rate", func(c *Config) { c.Limits.SubmitRate, c.Limits.SubmitBurst = 0, 0 }, ""},
		{"negative quota", func(c *Config) { c.Limits.DiskQuota = -2 }, "limits.disk_quota"},
		{"unlimited quota", func(c *Config) { c.Limits.DiskQuota = Unlimited }, ""},
		{"no forks kept", func(c *Config) { c.Pair.KeepForks = 0 }, "pair.keep_forks (--keep-forks): 0: want -1 (keep every fork) or at least 1"},
		{"every fork kept", func(c *Config) { c.Pair.KeepForks = Unlimited }, ""},
		{"one fork kept", func(c *Config) { c.Pair.KeepForks = 1 }, ""},
		{"zero queue", func(c *Config) { c.Limits.MaxQueue = 0 }, "limits.max_queue (--max-queue): 0: must be at least 1"},
		{"empty dir", func(c *Config) { c.Store.Dir = " " }, "store.dir (--data)"},
		{"peering without name", func(c *Config) { c.Peering.CloudListen = "tcp://127.0.0.1:5570" }, "peering.cloud_listen (--peering-cloud-listen): needs peering.name"},
		{"peering without listeners", func(c *Config) { c.Peering.Name = "a" }, "peering.cloud_listen (--peering-cloud-listen): peering needs"},
		{"peering self", func(c *Config) {
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "a", Cloud: "tcp://127.0.0.1:1", State: "tcp://127.0.0.1:2"}}}
		}, `peer "a" has this cluster's own name`},
		{"peering twice", func(c *Config) {
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "tcp://h:1", State: "tcp://h:2"}, {Name: "b", Cloud: "tcp://h:3", State: "tcp://h:4"}}}
		}, `peer "b" appears twice`},
		{"peering no state", func(c *Config) {
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "tcp://h:1"}}}
		}, `peer "b" needs both cloud and state`},
		{"peering bad name", func(c *Config) {
			c.Peering = PeeringSection{Name: "a b", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571"}
		}, `peering.name (--peering-name): "a b"`},
		{"peering bad endpoint", func(c *Config) {
			c.Peering = PeeringSection{Name: "a", CloudListen: "tcp://127.0.0.1:5570", StateListen: "tcp://127.0.0.1:5571",
				Peers: []Peer{{Name: "b", Cloud: "h:1", State: "tcp://h:2"}}}
		}, `peering.peers (--peering-peers): "h:1"`},
		{"notify", func(c *Config) { c.Notify.Listen = "127.0.0.1:5590" }, "notify.listen (--notify-listen)"},
		{"port clash", func(c *Config) { c.Notify.Listen = "tcp://127.0.0.1:5555" }, "notify.listen (--notify-listen): 127.0.0.1:5555 uses the same TCP port as broker.listen"},
		{"wildcard clash", func(c *Config) { c.Broker.Listen = []string{"tcp://*:8080"} }, "http.listen (--http-listen): 127.0.0.1:8080 uses the same TCP port as broker.listen"},
		{"other host no clash", func(c *Config) { c.Notify.Listen = "tcp://127.0.0.2:5555" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

// Every problem is reported, one a line.
func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.Broker.Heartbeat, c.Log.Format, c.Pair.Role = -1, "xml", "leader"
	err := c.Validate()
	if n := len(strings.Split(err.Error(), "\n")); n != 3 {
		t.Fatalf("%d lines:\n%v", n, err)
	}
	// Resolve returns the config with a validation error, for display.
	got, err := Resolve(nil, []string{"TITANIC_LOG_FORMAT=xml"})
	if !errors.Is(err, ErrInvalid) || got.Log.Format != "xml" {
		t.Fatalf("%q, %v", got.Log.Format, err)
	}
}

// nonDefault sets every setting to a value other than its default.
func nonDefault() Config {
	return Config{
		Broker: BrokerSection{Listen: []string{"tcp://10.0.0.1:6000", "ipc:///run/t\"q.sock"}, Heartbeat: 1500 * time.Millisecond,
			Liveness: 7, LeaseTimeout: 90*time.Minute + time.Second, RequestExpiry: 3 * time.Microsecond, DrainTimeout: time.Minute, PresenceTimeout: time.Hour},
		Store: StoreSection{Dir: `C:\titanic data\ü`, LockTimeout: 9 * time.Second, MaxBatch: 3, MaxBatchBytes: 5 * MiB, NoSync: true, BackupDir: "/b"},
		Queue: QueueSection{MaxAttempts: 9, BackoffBase: -time.Second, BackoffMax: time.Hour + time.Second, NoWorkerTimeout: 25 * time.Hour, Readers: 16, MaxBatch: 8192,
			Services: []ServiceRetry{{"mail", 3, 2 * time.Second, 10 * time.Minute}, {"x\x01", 0, 0, 90 * time.Second}}},
		Limits:    LimitsSection{MaxMessageSize: 1000, MaxBody: 3 * GiB, PerClientInflight: 5, SubmitRate: 0.25, SubmitBurst: 3, DiskQuota: 5 * TiB, MaxQueue: 6, MaxQueuedOps: 7, MaxQueuedReads: 8, MaxWaiters: 9, BodyCache: 1234567},
		Retention: RetentionSection{DoneTTL: 0, SweepInterval: 10 * time.Second},
		Log:       LogSection{Level: "debug", Format: "json"},
		HTTP:      HTTPSection{Listen: "[::1]:9090", TokenFile: "/etc/titanic/token\n\t"},
		Security:  SecuritySection{Curve: true, SecretKeyFile: "/k", PublicKeysDir: "/d", AdminFrom: []string{"10.0.0.0/8", "192.0.2.7"}},
		Raft: RaftSection{Enabled: true, NodeID: "n2", Bind: "0.0.0.0:7002", Advertise: "n2:7002", Peers: []string{"n1=a:1", "n2=n2:7002"},
			Timeout: 300 * time.Millisecond, SnapshotInterval: time.Hour, SnapshotThreshold: 1, TrailingLogs: 2},
		Pair: PairSection{Role: "backup", Peer: "p", PeerState: "tcp://p:1", PeerRaft: "p:2", PeerListen: "tcp://p:4", StateListen: "tcp://*:3", Heartbeat: time.Minute, PeerKey: "/p.pub"},
		Peering: PeeringSection{Name: "x", CloudListen: "tcp://*:5570", StateListen: "tcp://*:5571",
			Peers: []Peer{{Name: "y", Cloud: "tcp://y:1", State: "tcp://y:2"}, {Name: "z\x01", Cloud: "tcp://z:1", State: "tcp://z:2", Key: "/k/z.pub"}}},
		Notify: NotifySection{Listen: "tcp://*:5580"},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, c := range map[string]Config{"default": Default(), "every setting changed": nonDefault()} {
		t.Run(name, func(t *testing.T) {
			// Every setting really differs from the default.
			if name != "default" {
				d := Default()
				for _, s := range sections {
					for _, f := range s.fields {
						if f.secret {
							continue // masked when printed: TestMaskedToken
						}
						if reflect.DeepEqual(f.value(&c).Interface(), f.value(&d).Interface()) {
							t.Errorf("%s is the default", f.name())
						}
					}
				}
			}
			text := c.TOML()
			got := Default()
			if err := got.Decode("printed", text); err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip\n%s\ngave\n%s", text, got.TOML())
			}
			// The flag and environment form reads back too.
			env := []string{}
			for _, s := range sections {
				for _, f := range s.fields {
					env = append(env, f.env+"="+formatValue(f.value(&c)))
				}
			}
			got = Default()
			if err := got.ApplyEnv(env); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("environment round trip gave\n%s", got.TOML())
			}
		})
	}
}

func TestMaskedToken(t *testing.T) {
	c := Default()
	c.HTTP.Listen, c.HTTP.Token = "0.0.0.0:8080", "s3cr3t-t0ken"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	text := c.TOML()
	if strings.Contains(text, "s3cr3t") || !strings.Contains(text, `token = "`+Masked+`"`) {
		t.Fatalf("token not masked:\n%s", text)
	}
	if strings.Contains(Default().TOML(), Masked) {
		t.Fatal("an empty token is masked")
	}
	// The flag's printed value is masked too (--help shows it).
	fs := newFS()
	c.RegisterFlags(fs)
	if v := fs.Lookup("http-token").Value.String(); v != Masked {
		t.Fatalf("flag shows %q", v)
	}
	// The printout, loaded back, is refused rather than used as a token.
	back := Default()
	if err := back.Decode("printed", text); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mask") {
		t.Fatalf("masked token accepted: %v", err)
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		out  string
	}{
		{"0", 0, "0"}, {"1000", 1000, "1000"}, {"1024", KiB, "1KiB"}, {"64MiB", 64 * MiB, "64MiB"},
		{"64 mib", 64 * MiB, "64MiB"}, {"10MB", 10_000_000, "10000000"}, {"1gb", 1e9, "1000000000"},
		{"3GiB", 3 * GiB, "3GiB"}, {"2TiB", 2 * TiB, "2TiB"}, {"1536KiB", 1536 * KiB, "1536KiB"}, {"7B", 7, "7"},
		{"-1", Unlimited, "-1"}, {" -1 ", Unlimited, "-1"},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want || got.String() != tc.out {
			t.Errorf("ParseSize(%q) = %d (%s), %v; want %d (%s)", tc.in, got, got, err, tc.want, tc.out)
		}
	}
	for _, bad := range []string{"", "MiB", "-2", "-1MiB", "1.5GiB", "12XB", "99999999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", time.Hour: "1h", 168 * time.Hour: "168h", 90 * time.Minute: "1h30m",
		time.Minute: "1m", 2500 * time.Millisecond: "2.5s", time.Hour + time.Second: "1h0m1s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("%v does not read back: %v %v", d, back, err)
		}
	}
}

func TestReference(t *testing.T) {
	ref := Reference()
	for _, s := range sections {
		for _, f := range s.fields {
			row := "| `" + f.name() + "` | `--" + f.flag + "` | `" + f.env + "` |"
			if !strings.Contains(ref, row) {
				t.Errorf("reference lacks %s", row)
			}
		}
	}
	doc := "# T\n\n" + RefStart + "\nold\n" + RefEnd + "\n\nmore\n"
	out, found, err := SpliceReference(doc)
	if err != nil || !found || out != "# T\n\n"+RefStart+"\n"+ref+RefEnd+"\n\nmore\n" {
		t.Fatalf("splice: %v %v\n%s", found, err, out)
	}
	if again, _, _ := SpliceReference(out); again != out {
		t.Fatal("splice is not idempotent")
	}
	if _, found, _ := SpliceReference("# none\n"); found {
		t.Fatal("found markers in a document without them")
	}
	if _, _, err := SpliceReference(RefEnd + RefStart); err == nil {
		t.Fatal("markers out of order accepted")
	}
}

// TestUnlimited: one spelling of "no limit", -1, in the file, on the
// command line and in the environment; 0, as older files wrote it, keeps
// its meaning (NoLimit), and a bound is a bound.
func TestUnlimited(t *testing.T) {
	c := Default()
	err := c.Decode("t.toml", `
[limits]
max_message_size = -1
max_body = -1
per_client_inflight = -1
submit_rate = -1
disk_quota = -1
[retention]
done_ttl = "-1s"
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxMessageSize != Unlimited || l.MaxBody != Unlimited || l.PerClientInflight != Unlimited || l.SubmitRate != Unlimited || l.DiskQuota != Unlimited {
		t.Fatalf("-1 read as %+v", l)
	}
	for _, v := range []bool{NoLimit(l.MaxBody), NoLimit(l.SubmitRate), NoLimit(c.Retention.DoneTTL), NoLimit(0), NoLimit(Size(0)), NoLimit(time.Duration(0))} {
		if !v {
			t.Fatal("-1, a negative duration or 0 not taken as no limit")
		}
	}
	if NoLimit(16*MiB) || NoLimit(time.Hour) || NoLimit(0.5) {
		t.Fatal("a bound taken as no limit")
	}
	if s, err := ParseSize("-1"); err != nil || s != Unlimited {
		t.Fatalf("ParseSize(-1) = %v, %v", s, err)
	}
	if _, err := ParseSize("-2"); err == nil {
		t.Fatal("ParseSize(-2): no error")
	}
	if got := Size(Unlimited).String(); got != "-1" {
		t.Fatalf("Unlimited prints %q, want -1 (read back by ParseSize)", got)
	}
}
