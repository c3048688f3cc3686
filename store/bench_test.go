package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// BenchmarkApplySubmit measures durable submits (100-byte body, fsync on)
// from concurrent callers, one op per Apply, and reports how many commits
// (fsyncs) each op cost: group commit should drive it well below 1.
func BenchmarkApplySubmit(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchSubmit(b, writers, 1)
		})
	}
	// One caller with 100 ops per Apply: the ceiling of one transaction.
	b.Run("writers=1/batch=100", func(b *testing.B) { benchSubmit(b, 1, 100) })
}

func benchSubmit(b *testing.B, writers, batch int) {
	s, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	body := [][]byte{make([]byte, 100)}
	before, err := s.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			ops := make([]store.Op, batch)
			for next.Add(int64(batch)) <= int64(b.N)+int64(batch)-1 {
				for i := range ops {
					ops[i] = store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(),
						Service: fmt.Sprint("svc", w%4), Body: body}
				}
				res, err := s.Apply(ctx, ops)
				if err == nil {
					err = res[0].Err
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	after, err := s.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	ops := float64(after.Ops - before.Ops)
	b.ReportMetric(ops/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(after.Commits-before.Commits)/ops, "commits/op")
}

// BenchmarkFsync is the machine's baseline: one small overwrite plus
// fdatasync of a file on the filesystem the other benchmarks use. bbolt
// syncs twice per commit (data pages, then the meta page).
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		buf[0] = byte(i)
		if _, err := f.WriteAt(buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := datasync(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "fsyncs/s")
}
