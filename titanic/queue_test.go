package titanic

import (
	"fmt"
	"testing"
)

func seqs(q *fifo) []uint64 {
	var out []uint64
	q.each(func(e *entry) bool { out = append(out, e.seq); return true })
	return out
}

func TestFIFOOrder(t *testing.T) {
	q := &fifo{}
	for _, s := range []uint64{1, 2, 5, 6} {
		q.push(&entry{seq: s})
	}
	q.push(&entry{seq: 4}) // a requeue: older than the tail
	q.push(&entry{seq: 3})
	if got := fmt.Sprint(seqs(q)); got != "[1 2 3 4 5 6]" {
		t.Fatalf("each = %s", got)
	}
	var popped []uint64
	for q.len() > 0 {
		popped = append(popped, q.pop().seq)
	}
	if got := fmt.Sprint(popped); got != "[1 2 3 4 5 6]" {
		t.Fatalf("pop order = %s", got)
	}
	if q.pop() != nil || q.peek() != nil {
		t.Fatal("empty fifo returned an entry")
	}
}

func TestFIFOCompactAndReclaim(t *testing.T) {
	q := &fifo{}
	for i := range 5000 {
		q.push(&entry{seq: uint64(i)})
	}
	for range 3000 {
		q.pop()
	}
	if q.head > len(q.items) || q.len() != 2000 || q.peek().seq != 3000 {
		t.Fatalf("after pops: head %d len %d peek %d", q.head, q.len(), q.peek().seq)
	}
	q.each(func(e *entry) bool { e.gone = e.seq%2 == 0; return true })
	q.compact()
	if q.len() != 1000 || q.peek().seq != 3001 {
		t.Fatalf("after compact: len %d peek %d", q.len(), q.peek().seq)
	}
}

// BenchmarkEnqueueDepth shows that queueing a ticket costs the same with
// 10 or 100,000 tickets already waiting (no rescans).
func BenchmarkEnqueueDepth(b *testing.B) {
	for _, depth := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			q := &fifo{}
			for i := range depth {
				q.push(&entry{seq: uint64(i)})
			}
			seq := uint64(depth)
			for b.Loop() {
				q.push(&entry{seq: seq})
				seq++
			}
		})
	}
}
