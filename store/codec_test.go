package store

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var codecTime = time.Date(2025, 11, 23, 3, 4, 5, 678901234, time.UTC)

func sampleTickets() []Ticket {
	return []Ticket{
		{ID: ID{1}, Service: "echo", State: StatePending, Seq: 1, Created: codecTime, Updated: codecTime},
		{ID: ID{2}, Service: "s\x00\xff", State: StateDispatched, Seq: math.MaxUint64, Attempts: maxAttempts,
			IdemKey: "k", Reason: strings.Repeat("r", 300), Created: time.Time{}, Updated: time.Unix(1<<40, 999999999).UTC()},
		{ID: ID{3}, Service: "x", State: StateDone, Created: time.Unix(-1, 1).UTC(), Updated: codecTime},
		{ID: ID{4}, Service: "y", State: StateFailed, Seq: 300, Attempts: 7, Reason: "gave up"},
		{ID: ID{5}, Service: "z", State: StateCancelled, Seq: 9, Reason: "cancelled", Created: codecTime, Updated: codecTime,
			Lifecycle: Lifecycle{Priority: PriorityHigh, Due: codecTime.Add(time.Hour), Deadline: codecTime.Add(2 * time.Hour),
				Retry: RetryPolicy{MaxAttempts: 3, Base: time.Second, Max: time.Minute}},
			Started: codecTime, Worker: "w-1"},
		{ID: ID{6}, Service: "z", State: StatePending, Lifecycle: Lifecycle{Priority: PriorityLow}},
	}
}

func sampleFrames() [][][]byte {
	return [][][]byte{
		{},
		{{}},
		{{}, {}, {}},
		{[]byte("hello"), []byte("world")},
		{[]byte{0, 1, 2, 0xff}, {}, bytes.Repeat([]byte{0x80}, 200)},
	}
}

func sampleOps() [][]Op {
	return [][]Op{
		nil,
		{{Kind: OpSubmit, ID: ID{1}, Time: codecTime, Service: "echo", Body: [][]byte{[]byte("hi"), {}}, IdemKey: "k"}},
		{
			{Kind: OpDispatch, ID: ID{2}, Time: codecTime},
			{Kind: OpReply, ID: ID{2}, Time: codecTime, Reply: [][]byte{{}}},
			{Kind: OpFail, ID: ID{3}, Reason: "why"},
			{Kind: OpRequeue, ID: ID{4}, Time: time.Unix(0, 1).UTC(), Reason: "lease expired"},
			{Kind: OpClose, ID: ID{5}, Time: codecTime},
			{Kind: OpClose, ID: ID{6}},
		},
		{
			{Kind: OpSubmit, ID: ID{7}, Time: codecTime, Service: "s", Body: [][]byte{{1}},
				Lifecycle: Lifecycle{Priority: PriorityLow, Due: codecTime, Deadline: codecTime.Add(time.Second), Retry: RetryPolicy{MaxAttempts: 1, Base: 1, Max: 2}}},
			{Kind: OpDispatch, ID: ID{7}, Time: codecTime, Worker: "worker 7"},
			{Kind: OpRequeue, ID: ID{7}, Time: codecTime, Lifecycle: Lifecycle{Due: codecTime.Add(time.Minute)}},
			{Kind: OpCancel, ID: ID{7}, Time: codecTime, Reason: "no longer needed"},
			{Kind: OpRetry, ID: ID{8}},
			{Kind: OpPause, Service: "s", Time: codecTime},
			{Kind: OpResume, Service: "s"},
		},
		{
			{Kind: OpAdopt, ID: ID{9}, Time: codecTime, Service: "s", Body: [][]byte{{2}}, Attempts: 2, Dispatched: true,
				Lifecycle: Lifecycle{Deadline: codecTime}},
			{Kind: OpAdopt, ID: ID{10}, Time: codecTime, Service: "s", Attempts: 1},
		},
	}
}

func TestTicketRoundTrip(t *testing.T) {
	for _, tk := range sampleTickets() {
		got, err := decodeTicket(tk.ID, encodeTicket(&tk))
		if err != nil {
			t.Fatalf("decode %s: %v", tk.ID, err)
		}
		if !reflect.DeepEqual(got, tk) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, tk)
		}
	}
}

func TestFramesRoundTrip(t *testing.T) {
	for _, frames := range sampleFrames() {
		enc := encodeFrames(frames)
		if len(enc) != framesSize(frames) {
			t.Fatalf("framesSize = %d, encoded %d", framesSize(frames), len(enc))
		}
		got, err := decodeFrames(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || !slices.EqualFunc(got, frames, bytes.Equal) {
			t.Fatalf("round trip: got %q, want %q", got, frames)
		}
		// The frames must not share memory with the record (a bbolt
		// page) and must not overlap each other when appended to.
		clear(enc)
		for i := range got {
			_ = append(got[i], 'x')
		}
		if !slices.EqualFunc(got, frames, bytes.Equal) {
			t.Fatalf("decoded frames alias the input or each other: %q", got)
		}
	}
}

func TestOpsRoundTrip(t *testing.T) {
	for _, ops := range sampleOps() {
		got, err := DecodeOps(EncodeOps(ops))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ops) {
			t.Fatalf("%d ops, want %d", len(got), len(ops))
		}
		for i := range ops {
			if !opsEqual(got[i], ops[i]) {
				t.Fatalf("op %d:\n got %+v\nwant %+v", i, got[i], ops[i])
			}
		}
	}
}

func opsEqual(a, b Op) bool {
	return a.Kind == b.Kind && a.ID == b.ID && a.Time.Equal(b.Time) && a.Service == b.Service &&
		a.IdemKey == b.IdemKey && a.Reason == b.Reason && a.Worker == b.Worker &&
		a.Attempts == b.Attempts && a.Dispatched == b.Dispatched &&
		a.Priority == b.Priority && a.Due.Equal(b.Due) && a.Deadline.Equal(b.Deadline) && a.Retry == b.Retry &&
		slices.EqualFunc(a.Body, b.Body, bytes.Equal) && slices.EqualFunc(a.Reply, b.Reply, bytes.Equal)
}

// TestDecodeDamaged cuts and flips valid records: decoders must answer
// ErrCorrupt or a value, never panic.
func TestDecodeDamaged(t *testing.T) {
	var records [][]byte
	for _, tk := range sampleTickets() {
		records = append(records, encodeTicket(&tk))
	}
	for _, f := range sampleFrames() {
		records = append(records, encodeFrames(f))
	}
	for _, ops := range sampleOps() {
		records = append(records, EncodeOps(ops))
	}
	decoders := map[string]func([]byte) error{
		"ticket": func(b []byte) error { _, err := decodeTicket(ID{}, b); return err },
		"frames": func(b []byte) error { _, err := decodeFrames(b); return err },
		"ops":    func(b []byte) error { _, err := DecodeOps(b); return err },
	}
	for name, decode := range decoders {
		for _, rec := range records {
			for n := range len(rec) {
				if err := decode(rec[:n]); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s of %d-byte prefix: %v does not wrap ErrCorrupt", name, n, err)
				}
			}
			for i := range rec {
				damaged := bytes.Clone(rec)
				damaged[i] ^= 0xa5
				if err := decode(damaged); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s with byte %d flipped: %v", name, i, err)
				}
			}
		}
	}
	// A huge count must be refused before it is allocated.
	if _, err := decodeFrames([]byte{framesRecordV1, 0xff, 0xff, 0xff, 0xff, 0x0f}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("huge frame count: %v", err)
	}
}

func FuzzDecodeTicket(f *testing.F) {
	for _, tk := range sampleTickets() {
		f.Add(encodeTicket(&tk))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := decodeTicket(ID{9}, b)
		if err != nil {
			// A record version this build does not know is a newer
			// build's, not damage.
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		again, err := decodeTicket(ID{9}, encodeTicket(&tk))
		if err != nil || !reflect.DeepEqual(again, tk) {
			t.Fatalf("re-encoding %+v gave %+v, %v", tk, again, err)
		}
	})
}

func FuzzDecodeFrames(f *testing.F) {
	for _, frames := range sampleFrames() {
		f.Add(encodeFrames(frames))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		frames, err := decodeFrames(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeFrames(encodeFrames(frames))
		if err != nil || !slices.EqualFunc(again, frames, bytes.Equal) {
			t.Fatalf("re-encoding %q gave %q, %v", frames, again, err)
		}
	})
}

func FuzzDecodeOps(f *testing.F) {
	for _, ops := range sampleOps() {
		f.Add(EncodeOps(ops))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := DecodeOps(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		again, err := DecodeOps(EncodeOps(ops))
		if err != nil || len(again) != len(ops) {
			t.Fatalf("re-encoding gave %d ops, %v", len(again), err)
		}
		for i := range ops {
			if !opsEqual(again[i], ops[i]) {
				t.Fatalf("op %d changed on re-encoding", i)
			}
		}
	})
}

// A batch from a newer writer (a record version or an op kind this build
// does not know) is refused as such, not as damage and not half applied.
func TestDecodeOpsNewer(t *testing.T) {
	rec := EncodeOps([]Op{{Kind: OpSubmit, ID: ID{1}, Service: "s"}, {Kind: OpKind(lastOpKind + 1), ID: ID{2}}})
	if _, err := DecodeOps(rec); !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown op kind: %v, want ErrUnsupported", err)
	}
	rec = EncodeOps([]Op{{Kind: OpSubmit, ID: ID{1}, Service: "s"}})
	rec[0] = OpsRecordVersion + 1
	if _, err := DecodeOps(rec); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown record version: %v, want ErrUnsupported", err)
	}
}
