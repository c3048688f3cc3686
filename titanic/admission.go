package titanic

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/titanicmq/titanic/store"
)

// admission is the part of the Service that decides whether a request is
// taken at all: the per-client limits (limits.go), the quota, the disk
// reserve (diskfree.go) and the refusal of clients that do not read their
// answers, plus client presence (presence.go), which the same clients'
// titanic.hello feeds. It owns that state, each piece under its own lock,
// and sends nothing: it returns refusals and the caller answers them, so
// that it can be driven alone with a fake clock (admission_test.go).
type admission struct {
	cfg   Config
	stats *counters
	log   *slog.Logger
	usage usageReader

	limits  limiter
	present presence
	used    atomic.Int64 // store bytes used, for Quota
	disk    diskGuard    // full-disk mode, for DiskReserve
}

// usageReader is what the quota needs of the store.
type usageReader interface {
	Usage() (store.Usage, error)
}

// newAdmission returns the admission of a Service configured by cfg
// (filled), counting into stats and reading the store's size from usage.
func newAdmission(cfg Config, stats *counters, usage usageReader, log *slog.Logger) *admission {
	return &admission{cfg: cfg, stats: stats, usage: usage, log: log}
}

// bodyTooLarge reports whether a request body of n bytes is over MaxBody
// (a bad request: resending cannot help), counting it.
func (a *admission) bodyTooLarge(n int) bool {
	if a.cfg.MaxBody > 0 && n > a.cfg.MaxBody {
		a.stats.badRequests.Add(1)
		return true
	}
	return false
}

// bodyTooLargeText is the refusal of a body of n bytes over MaxBody: it
// names the setting, the broker's, to raise.
func (a *admission) bodyTooLargeText(n int) string {
	return fmt.Sprintf("body of %d bytes is over the limit of %d (the broker's limits.max_body, --max-body)", n, a.cfg.MaxBody)
}

// refuseSubmit returns the refusal of a well-formed submit for what is
// not a limit of its client: the store over its quota, the disk under its
// reserve, or the client not reading its answers (unread); nil when
// none holds. The client's own limits are admit's.
func (a *admission) refuseSubmit(unread bool) [][]byte {
	if out := a.overQuota(); out != nil {
		return out
	}
	if out := a.diskFull(); out != nil {
		return out
	}
	return a.refuseUnread(unread)
}
