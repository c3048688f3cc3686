package ops

import (
	"cmp"
	"slices"
)

// Service names come from the wire: any client that reaches the client
// endpoint names the services it submits to, and each becomes label
// values of the per-service series and a row of /api/v1/services for as
// long as its tickets are kept. Without a bound, one client inventing
// names made /metrics hundreds of thousands of lines, scrapes slower than
// Prometheus' timeout and the broker's memory grow by hundreds of MB per
// scrape. So both show at most Config.MaxServices services, those with
// the most tickets, and sum the rest under one: OtherService.

// DefaultMaxServices is Config.MaxServices' default: services beyond it
// are summed under OtherService. A few thousand series in all, well
// within what one scrape serves quickly.
const DefaultMaxServices = 500

// OtherService is the service label (and the /api/v1/services "other"
// row's name) of the services summed beyond Config.MaxServices. A
// service of that very name is always summed there, so that its label
// values cannot collide with the sum's.
const OtherService = "(other)"

// maxServices is c.MaxServices, or its default when unset.
func (c *Config) maxServices() int {
	if c.MaxServices > 0 {
		return c.MaxServices
	}
	return DefaultMaxServices
}

// rank is how a service competes for a place among the services shown.
type rank struct {
	name string
	// pinned services come first: a paused one, which only an operator
	// can make, stays in view (with its Resume button) whatever clients
	// invent.
	pinned bool
	// weight: its stored tickets, registered workers and queued plain
	// requests, together. The services with the most come first.
	weight int
}

// topServices splits rows into the n that rank first (most weight,
// names breaking ties, so the choice is stable from one scrape to the
// next) and the rest, which the caller sums under OtherService. A row
// named OtherService always goes to the rest. kept is in rank order.
func topServices[T any](rows []T, n int, rankOf func(*T) rank) (kept, rest []T) {
	ranks := make([]rank, len(rows))
	idx := make([]int, 0, len(rows))
	for i := range rows {
		ranks[i] = rankOf(&rows[i])
		if ranks[i].name == OtherService {
			rest = append(rest, rows[i])
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) <= n {
		for _, i := range idx {
			kept = append(kept, rows[i])
		}
		return kept, rest
	}
	slices.SortFunc(idx, func(a, b int) int {
		ra, rb := ranks[a], ranks[b]
		if ra.pinned != rb.pinned {
			if ra.pinned {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(rb.weight, ra.weight), cmp.Compare(ra.name, rb.name))
	})
	for _, i := range idx[:n] {
		kept = append(kept, rows[i])
	}
	for _, i := range idx[n:] {
		rest = append(rest, rows[i])
	}
	return kept, rest
}
