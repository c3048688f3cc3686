package titanic

import (
	"fmt"
	"sync"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// Full disk. While a watched file system (the data directory's; the raft
// directory's when replicated) has less free space than the reserve, the
// service refuses submits (500) and everything else goes on: replies,
// failures, closes and lookups write little or free space, and the reserve
// is there for them, so the store (and the raft log and FSM) never meets
// ENOSPC. The mode is entered and left by itself as free space goes and
// returns; each change is logged once.
//
// The free space is read with statfs, a cheap syscall, at most every
// diskCheckEvery on the admission path, after commits, and by a loop every
// diskPollEvery (so the mode ends, and is logged, without a submit).
// Between readings the bodies of the submits admitted since are taken off
// the last one, those not committed yet and those committed after it, so
// a burst of large submits stops at the reserve instead of running
// through it unseen.

const (
	diskCheckEvery = 100 * time.Millisecond
	diskPollEvery  = time.Second
	// DefaultDiskReserve is the free space kept by default; it is capped
	// at diskReserveShare of the file system (see reserveFor).
	DefaultDiskReserve = 256 << 20
	// diskReserveShare caps the reserve at 1/20 (5%) of the file
	// system's size, so that a small disk is not refused from the start.
	diskReserveShare = 20
)

// DiskSpace is what statfs tells of a file system.
type DiskSpace struct {
	Free  uint64 // bytes available to the broker
	Total uint64 // the file system's size
}

// DiskStatus is the full-disk mode as titanic.stats and the metrics show
// it.
type DiskStatus struct {
	Full bool
	// Path is the watched directory with the least free space above its
	// reserve (the one that is full, when Full); Free and Reserve are its.
	Path    string
	Free    uint64
	Reserve uint64
}

// diskGuard is the full-disk state. Its methods are called from the
// broker loop (admission), HTTP handlers (Submit), the store completer and
// the poll loop, hence the mutex; a reading is one syscall per path.
type diskGuard struct {
	mu      sync.Mutex
	read    time.Time // last statfs
	pending uint64    // body bytes of admitted submits not committed yet
	since   uint64    // body bytes of submits committed since read
	status  DiskStatus
	failed  bool // a statfs failed last time (logged once)
}

// diskEnabled reports whether the full-disk mode is configured.
func (a *admission) diskEnabled() bool {
	return a.cfg.DiskReserve > 0 && len(a.cfg.DiskPaths) > 0 && a.cfg.Statfs != nil
}

// reserveFor is the reserve of a file system of total bytes.
func (a *admission) reserveFor(total uint64) uint64 {
	return min(uint64(a.cfg.DiskReserve), total/diskReserveShare)
}

// refreshDisk reads the free space of the watched paths when force is
// set or the last reading is older than diskCheckEvery, and logs a change
// of mode. Callers do not hold g.mu.
func (a *admission) refreshDisk(force bool) {
	if !a.diskEnabled() {
		return
	}
	g := &a.disk
	now := a.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !force && now.Sub(g.read) < diskCheckEvery {
		return
	}
	g.read = now
	was := g.status.Full
	var st DiskStatus
	first := true
	for _, p := range a.cfg.DiskPaths {
		sp, err := a.cfg.Statfs(p)
		if err != nil {
			// Unknown free space refuses nothing: the store's own errors
			// still protect the data.
			if !g.failed {
				a.log.Warn("cannot read the free disk space; the disk reserve is not checked", "path", p, "err", err)
				g.failed = true
			}
			continue
		}
		res := a.reserveFor(sp.Total)
		margin := int64(sp.Free) - int64(res)
		if first || margin < int64(st.Free)-int64(st.Reserve) {
			st = DiskStatus{Full: sp.Free < res, Path: p, Free: sp.Free, Reserve: res}
			first = false
		}
	}
	if first {
		return // no reading: keep the last status
	}
	g.failed = false
	g.status = st
	g.since = 0
	switch {
	case st.Full && !was:
		a.log.Warn("disk full: submits refused until space is freed; replies, lookups and closes go on",
			"path", st.Path, "free", st.Free, "reserve", st.Reserve)
	case !st.Full && was:
		a.log.Info("disk space returned: submits accepted again", "path", st.Path, "free", st.Free, "reserve", st.Reserve)
	}
}

// diskFull returns the refusal of a submit while the disk is full, or
// nil, counting it.
func (a *admission) diskFull() [][]byte {
	why := a.diskShort()
	if why == "" {
		return nil
	}
	a.stats.busy.Add(1)
	a.stats.diskRefused.Add(1)
	return replyText(tsp.CodeError, why)
}

// diskShort says why the disk is full (under its reserve), or "".
func (a *admission) diskShort() string {
	if !a.diskEnabled() {
		return ""
	}
	a.refreshDisk(false)
	g := &a.disk
	g.mu.Lock()
	st := g.status
	free := st.Free - min(st.Free, g.pending+g.since)
	full := st.Full || free < st.Reserve
	g.mu.Unlock()
	if !full {
		return ""
	}
	return fmt.Sprintf("disk full: %s free on %s, below the %s reserve: submits refused until space is freed; replies, lookups and closes go on",
		mib(free), st.Path, mib(st.Reserve))
}

// diskSubmitted counts the body bytes of a submit handed to the store;
// diskCommitted moves them to the committed ones once the store answered
// (whether it stored them or not: a failed commit wrote nothing lasting,
// but counting it errs on the side of the reserve until the next
// reading).
func (a *admission) diskSubmitted(n int) {
	if !a.diskEnabled() {
		return
	}
	a.disk.mu.Lock()
	a.disk.pending += uint64(n)
	a.disk.mu.Unlock()
}

func (a *admission) diskCommitted(n int, stored bool) {
	if !a.diskEnabled() {
		return
	}
	g := &a.disk
	g.mu.Lock()
	g.pending -= min(g.pending, uint64(n))
	if stored {
		g.since += uint64(n)
	}
	g.mu.Unlock()
}

// diskStatus reports the full-disk mode (zero when it is not configured).
func (a *admission) diskStatus() DiskStatus {
	g := &a.disk
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status
}

func mib(n uint64) string {
	if n >= 10<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
