package titanic

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeDisk is a file system whose free space the test sets.
type fakeDisk struct {
	mu          sync.Mutex
	free, total uint64
	calls       int
}

func (d *fakeDisk) statfs(string) (DiskSpace, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	return DiskSpace{Free: d.free, Total: d.total}, nil
}

func (d *fakeDisk) set(free uint64) {
	d.mu.Lock()
	d.free = free
	d.mu.Unlock()
}

// syncBuffer is a log sink safe for the service's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDiskReserve: below the reserve, submits (9/TSP and Submit, the HTTP
// API's) are refused with a text saying why, once-logged; a pending
// ticket's reply is still recorded, lookups and closes go on; when space
// returns, submits are accepted again without a restart.
func TestDiskReserve(t *testing.T) {
	disk := &fakeDisk{free: 1 << 30, total: 100 << 30}
	var logs syncBuffer
	h := newHarness(t, Config{
		DiskReserve: 256 << 20,
		DiskPaths:   []string{"/data"},
		Statfs:      disk.statfs,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	}, "")
	ticket := h.submit("echo", "x")

	disk.set(120 << 20)
	h.svc.adm.refreshDisk(true)
	const want = "disk full: 120 MiB free on /data, below the 256 MiB reserve: submits refused until space is freed; replies, lookups and closes go on"
	for i := range 3 {
		r := h.call(tsp.SvcRequest, "echo", "y")
		if codeOf(r) != tsp.CodeError || string(r[1]) != want {
			t.Fatalf("submit %d on a full disk = %q, want 500 %q", i, r, want)
		}
	}
	if r := h.call(tsp.SvcSubmit, "key-1", "echo", "y"); codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), "disk full") {
		t.Fatalf("titanic.submit on a full disk = %q", r)
	}
	if _, _, err := h.svc.Submit(context.Background(), "echo", [][]byte{[]byte("y")}, "k", store.Lifecycle{}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Submit on a full disk: %v, want ErrBusy disk full", err)
	}
	if st := h.svc.Stats(); !st.Disk.Full || st.Disk.Free != 120<<20 || st.Disk.Reserve != 256<<20 || st.DiskRefused != 5 {
		t.Fatalf("stats on a full disk: disk %+v refused %d", st.Disk, st.DiskRefused)
	}
	// Everything else goes on.
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending {
		t.Fatalf("lookup on a full disk = %q", r)
	}
	lease, _ := h.next("echo")
	h.complete(lease, ticket, "X")
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodeOK || string(r[1]) != "X" {
		t.Fatalf("reply recorded on a full disk = %q", r)
	}
	if r := h.call(tsp.SvcClose, ticket); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close on a full disk = %q", r)
	}

	disk.set(300 << 20)
	h.svc.adm.refreshDisk(true)
	if r := h.call(tsp.SvcRequest, "echo", "z"); codeOf(r) != tsp.CodeOK {
		t.Fatalf("submit once space returned = %q", r)
	}
	if h.svc.DiskStatus().Full {
		t.Fatal("still full once space returned")
	}
	out := logs.String()
	if n := strings.Count(out, "disk full: submits refused"); n != 1 {
		t.Errorf("entering the mode logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "disk space returned"); n != 1 {
		t.Errorf("leaving the mode logged %d times, want once:\n%s", n, out)
	}
}

// TestDiskReserveCountsAdmittedBytes: between two readings of the free
// space, the bodies submitted since are taken off the last one, so a
// burst of large submits stops at the reserve instead of running through
// it before the next reading.
func TestDiskReserveCountsAdmittedBytes(t *testing.T) {
	disk := &fakeDisk{free: 8 << 20, total: 1 << 30}
	// A frozen clock: no reading on the admission path after the first
	// (the poll loop's, every second, could still come: see below).
	now := time.Now()
	h := newHarness(t, Config{
		DiskReserve: 4 << 20,
		DiskPaths:   []string{"/data"},
		Statfs:      disk.statfs,
		Now:         func() time.Time { return now },
	}, "")
	h.svc.adm.refreshDisk(true)
	disk.mu.Lock()
	reads := disk.calls
	disk.mu.Unlock()
	body := strings.Repeat("b", 512<<10)
	accepted := 0
	for range 12 {
		if r := h.call(tsp.SvcRequest, "echo", body); codeOf(r) == tsp.CodeOK {
			accepted++
		} else if !strings.HasPrefix(string(r[1]), "disk full") {
			t.Fatalf("submit = %q", r)
		}
	}
	// 4 MiB above the reserve: 8 bodies of 512 KiB fit before the
	// estimate is under it (the 9th is admitted at exactly the reserve).
	disk.mu.Lock()
	reread := disk.calls != reads
	disk.mu.Unlock()
	if reread {
		// The poll loop read the (unmoving) free space during the burst:
		// the bytes counted until then were forgotten.
		t.Logf("the free space was read again during the burst; %d accepted", accepted)
		if accepted < 9 {
			t.Fatalf("%d submits accepted, want at least 9", accepted)
		}
	} else if accepted != 9 {
		t.Fatalf("%d submits of 512 KiB accepted with 4 MiB above the reserve, want 9", accepted)
	}
}

// TestDiskReserveShare: the reserve is at most 5% of the file system, so
// a small disk is not refused from the start.
func TestDiskReserveShare(t *testing.T) {
	disk := &fakeDisk{free: 50 << 20, total: 100 << 20}
	h := newHarness(t, Config{DiskPaths: []string{"/small"}, Statfs: disk.statfs}, "")
	if st := h.svc.DiskStatus(); st.Full || st.Reserve != 5<<20 {
		t.Fatalf("100 MiB file system: %+v, want a 5 MiB reserve, not full", st)
	}
	if r := h.call(tsp.SvcRequest, "echo", "x"); codeOf(r) != tsp.CodeOK {
		t.Fatalf("submit = %q", r)
	}
}
