package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// makeBackup writes a store that belonged to a replicated cluster (it
// applied log entries up to index 41 in terms 3 and 5) and returns its
// path and ticket IDs.
func makeBackup(t *testing.T) (string, []store.ID) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ids []store.ID
	for i := range 4 {
		id := store.NewID()
		ids = append(ids, id)
		term := uint64(3)
		if i >= 2 {
			term = 5
		}
		op := store.Op{Kind: store.OpSubmit, ID: id, Time: time.Now(), Service: "echo", Body: [][]byte{[]byte("job")}}
		if r := st.ApplyLog(context.Background(), []store.Entry{{Index: uint64(38 + i), Term: term, Ops: []store.Op{op}}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	return path, ids
}

// restore runs `titanic restore ARGS...` in process.
func restore(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), append([]string{"restore"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dirNames lists dir, for checking that a refused restore left nothing.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestRestoreRefuses(t *testing.T) {
	backup, _ := makeBackup(t)
	backupBytes := readFile(t, backup)

	if code, _, _ := restore(t, "--data", t.TempDir()); code != exitUsage {
		t.Errorf("no backup named: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := restore(t, "--data", t.TempDir(), filepath.Join(t.TempDir(), "missing.db")); code != exitError {
		t.Errorf("missing backup: exit %d, want %d", code, exitError)
	}

	// Damaged backups: nothing is installed, no temporary file is left.
	damaged := map[string][]byte{
		"empty":     nil,
		"truncated": backupBytes[:len(backupBytes)/2],
		"foreign":   bytes.Repeat([]byte("not a store "), 2000),
	}
	for name, content := range damaged {
		path := filepath.Join(t.TempDir(), name+".db")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		data := t.TempDir()
		code, _, stderr := restore(t, "--data", data, path)
		if code != exitError || !strings.Contains(stderr, "corrupt") {
			t.Errorf("%s backup: exit %d, stderr %q; want %d and a corruption report", name, code, stderr, exitError)
		}
		if names := dirNames(t, data); len(names) != 0 {
			t.Errorf("%s backup: data directory holds %v after the refusal", name, names)
		}
	}

	// Existing data: refused without --force, and left as it was.
	for _, existing := range []string{storeFile, raftDir} {
		data := t.TempDir()
		p := filepath.Join(data, existing)
		if existing == raftDir {
			p = filepath.Join(data, raftDir, "raft.db")
			if err := os.Mkdir(filepath.Join(data, raftDir), 0o750); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := restore(t, "--data", data, backup)
		if code != exitError || !strings.Contains(stderr, "--force") {
			t.Errorf("existing %s: exit %d, stderr %q; want %d and a word on --force", existing, code, stderr, exitError)
		}
		if got := readFile(t, p); string(got) != "old" {
			t.Errorf("existing %s changed to %q", existing, got)
		}
		if names := dirNames(t, data); len(names) != 1 {
			t.Errorf("existing %s: data directory holds %v after the refusal", existing, names)
		}
	}

	// A damaged backup with --force: the existing data stays in place.
	data := t.TempDir()
	restoreOK(t, data, backup)
	before := readFile(t, filepath.Join(data, storeFile))
	trunc := filepath.Join(t.TempDir(), "t.db")
	if err := os.WriteFile(trunc, backupBytes[:len(backupBytes)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := restore(t, "--force", "--data", data, trunc); code != exitError {
		t.Errorf("damaged backup with --force: exit %d, want %d", code, exitError)
	}
	if got := readFile(t, filepath.Join(data, storeFile)); !bytes.Equal(got, before) {
		t.Error("a refused restore changed the existing titanic.db")
	}
	if names := dirNames(t, data); len(names) != 1 {
		t.Errorf("damaged backup with --force: data directory holds %v", names)
	}

	// A running broker's data (its store open, so locked): refused even
	// with --force.
	st, err := store.Open(filepath.Join(data, storeFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := restore(t, "--force", "--data", data, backup)
	st.Close()
	if code != exitError || !strings.Contains(stderr, "running") {
		t.Errorf("data in use: exit %d, stderr %q; want %d and 'running'", code, stderr, exitError)
	}
	if names := dirNames(t, data); len(names) != 1 {
		t.Errorf("data in use: data directory holds %v", names)
	}

	if got := readFile(t, backup); !bytes.Equal(got, backupBytes) {
		t.Error("restore changed the backup file")
	}
}

// restoreOK restores backup into data and fails the test unless it
// succeeded.
func restoreOK(t *testing.T, data, backup string, flags ...string) string {
	t.Helper()
	code, stdout, stderr := restore(t, append(append(flags, "--data", data), backup)...)
	if code != exitOK {
		t.Fatalf("restore: exit %d\n%s%s", code, stdout, stderr)
	}
	return stdout
}

// A restore installs the backup's tickets without the old cluster's
// bookkeeping; with --force it moves the previous store and raft state
// aside.
func TestRestoreInstalls(t *testing.T) {
	backup, ids := makeBackup(t)
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, raftDir), 0o750); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{storeFile: "old store", filepath.Join(raftDir, "raft.db"): "old log"} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := restoreOK(t, data, backup, "--force")
	for _, want := range []string{"4 tickets in 1 services", "applied index 41, 2 epoch records", "replaced-", "EVERY node"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	aside, err := filepath.Glob(filepath.Join(data, "replaced-*"))
	if err != nil || len(aside) != 1 {
		t.Fatalf("moved-aside directories: %v %v", aside, err)
	}
	if got := readFile(t, filepath.Join(aside[0], storeFile)); string(got) != "old store" {
		t.Errorf("moved-aside store holds %q", got)
	}
	if got := readFile(t, filepath.Join(aside[0], raftDir, "raft.db")); string(got) != "old log" {
		t.Errorf("moved-aside raft log holds %q", got)
	}
	if _, err := os.Stat(filepath.Join(data, raftDir)); !os.IsNotExist(err) {
		t.Errorf("raft/ still in the data directory: %v", err)
	}
	if names := dirNames(t, data); len(names) != 2 {
		t.Errorf("data directory holds %v, want titanic.db and the replaced directory", names)
	}

	ctx := context.Background()
	st, err := store.Open(filepath.Join(data, storeFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if tk, err := st.Get(ctx, id); err != nil || string(bytes.Join(tk.Body, nil)) != "job" {
			t.Errorf("ticket %s: %+v %v", id, tk, err)
		}
	}
	if h, err := st.History(ctx); err != nil || h.Applied != 0 || len(h.Epochs) != 0 {
		t.Errorf("restored store keeps a history: %+v %v", h, err)
	}

	// A second restore over it moves it aside in turn, into another
	// directory even within the same second.
	st.Close()
	restoreOK(t, data, backup, "--force")
	if aside, _ := filepath.Glob(filepath.Join(data, "replaced-*")); len(aside) != 2 {
		t.Errorf("after a second restore: %v", aside)
	}
}
