package store_test

import (
	"context"
	"io"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// TestPendingTicketsFillTheirPages: tickets are created in ID order (time-ordered
// UUIDv7) and queued in Seq order, so the pages of the buckets they go to
// fill from the left and split at the right edge; at bbolt's default
// split point each split page stayed half empty for good (about 570 bytes of
// data file per pending ticket of 100 bytes, against about 300 now).
func TestPendingTicketsFillTheirPages(t *testing.T) {
	st, _ := newStore(t)
	const n, batch = 20000, 64
	body := make([]byte, 100)
	for i := 0; i < n; i += batch {
		ops := make([]store.Op, 0, batch)
		for range batch {
			ops = append(ops, submit(store.NewID(), "fill", body))
		}
		mustApply(t, st, ops...)
	}
	size, err := st.Snapshot(context.Background(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.Usage()
	if err != nil {
		t.Fatal(err)
	}
	perTicket := float64(size-u.Free) / n
	t.Logf("%.0f bytes of data file per pending ticket (%d in use, %d free)", perTicket, size-u.Free, u.Free)
	if perTicket > 420 {
		t.Fatalf("%.0f bytes of data file per pending ticket of 100 bytes; want at most 420", perTicket)
	}
}
