package replica

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// raft's logs reach the broker's log (log/slog, --log-format json for
// machines) as one pre-formatted hclog line put whole into msg: with
// --log-format json a record reads
//
//	{"time":...,"level":"ERROR","msg":"2026-12-07T11:29:31.781Z [ERROR] raft: failed to heartbeat to: peer=127.0.0.1:46202 backoff time=500ms error=\"dial tcp ...\"","component":"raft","node":"n1"}
//
// a second timestamp and level inside the message, and raft's key/value
// pairs (peer, error, term, ...) as text in msg instead of attributes, so
// a log pipeline can neither filter on them nor group the repeated lines
// of one dead peer. The rest of the broker logs structured records.
func TestRaftLogsAreStructured(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "raft")}
	n.hclog().Error("failed to heartbeat to", "peer", "127.0.0.1:7000", "error", "connection refused")
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil {
		t.Fatalf("record %q: %v", buf.String(), err)
	}
	msg, _ := rec["msg"].(string)
	if strings.Contains(msg, "[ERROR]") || strings.Contains(msg, "peer=") {
		t.Errorf("raft record msg = %q: hclog's formatted line (its own time and level, its attributes as text); want msg %q with peer and error as attributes", msg, "failed to heartbeat to")
	}
	if rec["peer"] != "127.0.0.1:7000" {
		t.Errorf("raft record has no peer attribute: %v", rec)
	}
}

// raft's levels map onto slog's (its debug and trace left out, as before),
// and the names and With arguments it gives its parts become attributes.
func TestRaftLogLevelsAndNames(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l := n.hclog().Named("raft-net").With("local-address", "127.0.0.1:7001")
	l.Debug("left out")
	l.Trace("left out")
	l.Info("info line", "k", 1)
	l.Warn("warn line")
	l.Error("error line")
	var got []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		got = append(got, rec)
	}
	want := []struct{ msg, level string }{{"info line", "INFO"}, {"warn line", "WARN"}, {"error line", "ERROR"}}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if got[i]["msg"] != w.msg || got[i]["level"] != w.level || got[i]["subsystem"] != "raft-net" || got[i]["local-address"] != "127.0.0.1:7001" {
			t.Errorf("record %d = %v, want msg %q at %s with subsystem and local-address", i, got[i], w.msg, w.level)
		}
	}
}

// raft gives some values as hclog.Fmt (a configuration's servers:
// hclog.Fmt("%+v", servers)), which hclog formats; written as they came,
// the record read servers="[%+v [{Suffrage:Voter ...}]]". And the
// "nothing new to snapshot" a node meets after taking over is no error,
// nor a leader deposed by the election it lost, nor a candidate's vote
// request to the peer that is down.
func TestRaftLogFormatsValues(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewTextHandler(&buf, nil))}
	n.hclog().Info("updating configuration", "servers", hclog.Fmt("%+v", []struct{ ID string }{{"primary"}}), "mask", hclog.Hex(255))
	n.hclog().Error("failed to take snapshot", "error", raft.ErrNothingNewToSnapshot)
	n.hclog().Error("failed to take snapshot", "error", errors.New("disk full"))
	n.hclog().Error("peer has newer term, stopping replication", "peer", "primary")
	n.hclog().Error("failed to make requestVote RPC", "target", "primary", "error", errors.New("EOF"), "term", 4)
	out := buf.String()
	if !strings.Contains(out, `servers=[{ID:primary}]`) || !strings.Contains(out, "mask=0xff") {
		t.Errorf("hclog values not formatted as hclog does: %s", out)
	}
	if strings.Contains(out, "nothing new to snapshot") {
		t.Errorf("nothing new to snapshot logged at the default level: %s", out)
	}
	if !strings.Contains(out, "level=WARN msg=\"peer has newer term") {
		t.Errorf("a leader deposed by an election logged other than at WARN: %s", out)
	}
	if !strings.Contains(out, "level=WARN msg=\"failed to make requestVote RPC\"") {
		t.Errorf("a vote request to a peer that is down logged other than at WARN: %s", out)
	}
	if !strings.Contains(out, "level=ERROR msg=\"failed to take snapshot\" error=\"disk full\"") {
		t.Errorf("a real snapshot failure not logged: %s", out)
	}
}
