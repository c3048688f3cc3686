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
	benchSubmitOn(b, s, writers, batch)
}

// benchSubmitOn is benchSubmit on the open store s.
func benchSubmitOn(b *testing.B, s *store.BoltStore, writers, batch int) {
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

// BenchmarkApplyJob measures a job's life in the store without the fsync
// in the way: its submit, its dispatch and its reply, each in a batch of
// 100 like ops (one commit each), per job. Its allocs/op are the
// writer's per-job allocations (exact with -benchtime Nx, N a multiple of
// 100; otherwise the last round goes over b.N).
func BenchmarkApplyJob(b *testing.B) {
	const batch = 100
	s, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{Logger: testLogger(b), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	body := [][]byte{make([]byte, 100)}
	apply := func(ops []store.Op) {
		res, err := s.Apply(ctx, ops)
		if err == nil {
			for _, r := range res {
				if r.Err != nil {
					err = r.Err
					break
				}
			}
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	submits, dispatches, replies := make([]store.Op, batch), make([]store.Op, batch), make([]store.Op, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		now := time.Now()
		for i := range submits {
			id := store.NewID()
			submits[i] = store.Op{Kind: store.OpSubmit, ID: id, Time: now, Service: "svc", Body: body}
			dispatches[i] = store.Op{Kind: store.OpDispatch, ID: id, Time: now, Worker: "w1"}
			replies[i] = store.Op{Kind: store.OpReply, ID: id, Time: now, Reply: body}
		}
		apply(submits)
		apply(dispatches)
		apply(replies)
	}
}

// BenchmarkApplySubmitDeep is BenchmarkApplySubmit with 64 writers on
// large stores, where whether commits write bbolt's free page list
// depends on the data in use and the pages free (see syncFreelist):
// "full" holds 1,000,000 pending tickets (about 580 MB, few pages free:
// the list is written, a page); "fragmented" held 1,300,000 of which the
// oldest 300,000 were closed (about 146 MB free: a list of some 300 KB,
// written at every commit); "drained" held 2,000,000 of which the oldest
// 1,800,000 were closed, as a deep queue that was worked off leaves it
// (about 1 GB free, 130 MB in use: the list, 2 MB, is left out). Each
// store is built once (fsync off), then reopened durable; b.N's rounds
// share it.
func BenchmarkApplySubmitDeep(b *testing.B) {
	for _, c := range []struct {
		name          string
		pending, done int
	}{
		{"full", 1_000_000, 0},
		{"fragmented", 1_300_000, 300_000},
		{"drained", 2_000_000, 1_800_000},
	} {
		path := filepath.Join(b.TempDir(), "deep.db")
		buildDeep(b, path, c.pending, c.done)
		s, err := store.Open(path, store.Options{Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			benchSubmitOn(b, s, 64, 1)
			u, err := s.Usage()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(u.FileSize)/(1<<20), "file-MiB")
			b.ReportMetric(float64(u.Free)/(1<<20), "free-MiB")
		})
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// buildDeep writes n pending tickets to a new store at path, then closes
// the oldest done of them, in batches, with fsync off.
func buildDeep(b *testing.B, path string, n, done int) {
	s, err := store.Open(path, store.Options{NoSync: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	body := [][]byte{make([]byte, 100)}
	ids := make([]store.ID, n)
	const batch = 4096
	for i := 0; i < n; i += batch {
		ops := make([]store.Op, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			ids[j] = store.NewID()
			ops = append(ops, store.Op{Kind: store.OpSubmit, ID: ids[j], Time: time.Now(), Service: fmt.Sprint("svc", j%4), Body: body})
		}
		if _, err := s.Apply(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < done; i += batch {
		ops := make([]store.Op, 0, batch)
		for _, id := range ids[i:min(done, i+batch)] {
			ops = append(ops, store.Op{Kind: store.OpClose, ID: id, Time: time.Now()})
		}
		if _, err := s.Apply(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
