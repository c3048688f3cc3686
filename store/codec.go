package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Record encodings. Every record starts with a version byte so that a later
// format can be read side by side with this one; integers are varints and
// strings and frames are length-prefixed, so bodies may hold any bytes.
// Decoders check every length against what is left of the input before they
// allocate, and report damage as ErrCorrupt instead of panicking: the bytes
// come from disk (or, for ops, from a replication log) and may be damaged.
const (
	ticketRecordV1 = 1
	// ticketRecordV2 adds the extras (Lifecycle, Started, Worker) as
	// tagged fields; a ticket without any is written as V1.
	ticketRecordV2 = 2
	framesRecordV1 = 1
	opsRecordV1    = 1
	// opsRecordV2 is a batch with an op kind after OpClose (OpAdopt): a
	// node of the first release refuses it instead of misreading it.
	opsRecordV2 = 2
	// opsRecordV3 is a batch with an op kind after OpAdopt (OpRetry,
	// OpCancel, OpPause, OpResume, OpPurge), and every op followed by its extras
	// (Lifecycle, Worker) as tagged fields.
	opsRecordV3 = 3
	// opsRecordV4 is a batch with OpUndispatch; its layout is V3's.
	opsRecordV4 = 4
	// opsRecordV5 is a batch with an OpAdopt that carries the ticket's
	// dispatches in the other history (Op.Attempts, Op.Dispatched): two
	// more extras tags, which a V4 reader would refuse as unknown.
	opsRecordV5 = 5
	// opsRecordV6 is a batch with an OpHandover; its layout is V5's.
	opsRecordV6 = 6
	// opsRecordV7 is a batch with an OpHandover that names each op after
	// it by its place in the yielding node's solo journal (a keyed mark,
	// HandoverKeyedMark); its layout is V5's. A V6 reader would find no
	// position in the mark and take its batch unmarked (applied again on
	// a redo): the version keeps it out until every member reads it.
	opsRecordV7 = 7
	// opsRecordV8 is a handover that carries a purge as one (OpPurge,
	// applied on the taker's state: a ticket retried there is left
	// alone) instead of an OpClose; its layout is V5's, and OpPurge is a
	// V3 kind, which every reader since decodes. But a taker of version
	// 7 refuses an OpPurge in a merge, and with it the whole batch: the
	// version keeps it out until every member takes it.
	opsRecordV8 = 8
)

// OpsRecordVersion is the newest ops record (a replicated batch) this build
// reads and may write (`titanic version` prints it). A batch is written in
// the oldest version that holds its ops, so a cluster whose work needs no
// newer op kind stays readable by older members.
const OpsRecordVersion = opsRecordV8

// maxAttempts bounds the attempt counter a decoder accepts, so that a
// damaged record cannot overflow int on 32-bit platforms.
const maxAttempts = math.MaxInt32

// encodeTicket encodes a ticket's metadata. The body is stored separately
// (see layout in bolt.go) and is not part of the record.
func encodeTicket(t *Ticket) []byte {
	return appendTicket(make([]byte, 0, ticketSizeHint(t)), t)
}

// ticketSizeHint is the most encodeTicket takes for a ticket without
// extras (appendExtras).
func ticketSizeHint(t *Ticket) int {
	return 2 + 3*binary.MaxVarintLen64 + 4*binary.MaxVarintLen64 +
		3*binary.MaxVarintLen64 + len(t.Service) + len(t.IdemKey) + len(t.Reason)
}

// appendTicket appends encodeTicket's record to b.
func appendTicket(b []byte, t *Ticket) []byte {
	version := byte(ticketRecordV1)
	extra := !t.Lifecycle.IsZero() || !t.Started.IsZero() || t.Worker != ""
	if extra {
		version = ticketRecordV2
	}
	b = append(b, version, byte(t.State))
	b = binary.AppendUvarint(b, t.Seq)
	b = binary.AppendUvarint(b, uint64(t.Attempts))
	b = appendTime(b, t.Created)
	b = appendTime(b, t.Updated)
	b = appendString(b, t.Service)
	b = appendString(b, t.IdemKey)
	b = appendString(b, t.Reason)
	if extra {
		b = appendExtras(b, &t.Lifecycle, t.Started, t.Worker, nil)
	}
	return b
}

// decodeTicket decodes a record written by encodeTicket. The ID is not part
// of the record (it is the key) and the body is left nil.
func decodeTicket(id ID, b []byte) (Ticket, error) { return decodeTicketIn(id, b, nil) }

// decodeTicketIn is decodeTicket taking the service name from names when
// it is there (see txnBufs.names; nil: none).
func decodeTicketIn(id ID, b []byte, names *names) (Ticket, error) {
	d := decoder{b: b}
	t := Ticket{ID: id}
	v := d.byte()
	if v != ticketRecordV1 && v != ticketRecordV2 && d.err == nil {
		if v > ticketRecordV2 {
			return t, fmt.Errorf("%w: ticket %s: record version %d (this build reads up to %d)", ErrUnsupported, id, v, ticketRecordV2)
		}
		return t, fmt.Errorf("%w: ticket %s: record version %d", ErrCorrupt, id, v)
	}
	t.State = State(d.byte())
	t.Seq = d.uvarint()
	att := d.uvarint()
	t.Created = d.time()
	t.Updated = d.time()
	if names != nil {
		t.Service = names.of(d.stringBytes())
	} else {
		t.Service = d.string()
	}
	t.IdemKey = d.string()
	t.Reason = d.string()
	if v == ticketRecordV2 {
		d.extras(&t.Lifecycle, &t.Started, &t.Worker, nil)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err == nil && (t.State < StatePending || t.State > lastState) {
		d.err = fmt.Errorf("state %d", uint8(t.State))
	}
	if d.err == nil && att > maxAttempts {
		d.err = fmt.Errorf("attempts %d", att)
	}
	if d.err != nil {
		return Ticket{ID: id}, fmt.Errorf("%w: ticket %s: %v", ErrCorrupt, id, d.err)
	}
	t.Attempts = int(att)
	return t, nil
}

// framesSize returns the encoded size of frames, to check it against the
// largest value bbolt stores before encoding.
func framesSize(frames [][]byte) int {
	n := 1 + uvarintLen(uint64(len(frames)))
	for _, f := range frames {
		n += uvarintLen(uint64(len(f))) + len(f)
	}
	return n
}

// encodeFrames encodes a multipart message: a count, then each frame with
// its length. Zero frames and empty frames are both valid.
func encodeFrames(frames [][]byte) []byte {
	return appendFramesRecord(make([]byte, 0, framesSize(frames)), frames)
}

// appendFramesRecord appends encodeFrames' record to b.
func appendFramesRecord(b []byte, frames [][]byte) []byte {
	b = append(b, framesRecordV1)
	return appendFrames(b, frames)
}

// decodeFrames decodes a record written by encodeFrames. The frames are
// copied (into one allocation), so the result stays valid after a bbolt
// transaction ends. A record with zero frames gives a non-nil empty slice,
// so that "no frames" can be told from "no record".
func decodeFrames(b []byte) ([][]byte, error) {
	d := decoder{b: b}
	if v := d.byte(); v != framesRecordV1 && d.err == nil {
		return nil, fmt.Errorf("%w: frames record version %d", ErrCorrupt, v)
	}
	frames := d.frames()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: frames: %v", ErrCorrupt, d.err)
	}
	return frames, nil
}

// EncodeOps encodes a batch of ops into one self-contained record, for a
// replicated store that ships batches through a log (one log entry per
// batch). Op.Time keeps its wall clock to the nanosecond but loses its
// location and monotonic reading.
func EncodeOps(ops []Op) []byte {
	n := 1 + binary.MaxVarintLen64
	for i := range ops {
		op := &ops[i]
		n += 1 + len(op.ID) + 2*binary.MaxVarintLen64 + 4*binary.MaxVarintLen64 +
			len(op.Service) + len(op.IdemKey) + len(op.Reason) +
			framesSize(op.Body) + framesSize(op.Reply)
	}
	b := make([]byte, 0, n)
	version := opsRecordV1
	for i := range ops {
		version = max(version, ops[i].Version())
	}
	b = append(b, byte(version))
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		b = append(b, byte(op.Kind))
		b = append(b, op.ID[:]...)
		b = appendTime(b, op.Time)
		b = appendString(b, op.Service)
		b = appendFrames(b, op.Body)
		b = appendString(b, op.IdemKey)
		b = appendFrames(b, op.Reply)
		b = appendString(b, op.Reason)
		if version >= opsRecordV3 {
			var adopted *adoptedExtras
			if version >= opsRecordV5 {
				adopted = &adoptedExtras{attempts: op.Attempts, dispatched: op.Dispatched}
			}
			b = appendExtras(b, &op.Lifecycle, time.Time{}, op.Worker, adopted)
		}
	}
	return b
}

// DecodeOps decodes a record written by EncodeOps. Damaged input gives an
// error wrapping ErrCorrupt; a record version or op kind this build does
// not know, ErrUnsupported (a replica must then stop, not skip: the
// others apply it).
func DecodeOps(b []byte) ([]Op, error) {
	d := decoder{b: b}
	v := d.byte()
	if (v < opsRecordV1 || v > OpsRecordVersion) && d.err == nil {
		return nil, fmt.Errorf("%w: ops record version %d (this build reads up to %d)", ErrUnsupported, v, OpsRecordVersion)
	}
	n := d.count(1 + len(ID{}))
	ops := make([]Op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		var op Op
		op.Kind = OpKind(d.byte())
		copy(op.ID[:], d.bytes(len(op.ID)))
		op.Time = d.time()
		op.Service = d.string()
		op.Body = d.frames()
		op.IdemKey = d.string()
		op.Reply = d.frames()
		op.Reason = d.string()
		if v >= opsRecordV3 {
			var started time.Time
			var adopted *adoptedExtras
			if v >= opsRecordV5 {
				adopted = &adoptedExtras{}
			}
			d.extras(&op.Lifecycle, &started, &op.Worker, adopted)
			if !started.IsZero() {
				d.fail("an op carries a start time")
			}
			if adopted != nil {
				op.Attempts, op.Dispatched = adopted.attempts, adopted.dispatched
			}
		}
		ops = append(ops, op)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: ops: %v", ErrCorrupt, d.err)
	}
	for i := range ops {
		// A kind this build does not know comes from a newer writer
		// (new kinds come with a new record version too, but a kind is
		// checked here so that no reader ever applies half a batch).
		if ops[i].Kind < OpSubmit || ops[i].Kind > lastOpKind {
			return nil, fmt.Errorf("%w: op kind %d (this build knows up to %d)", ErrUnsupported, ops[i].Kind, lastOpKind)
		}
	}
	return ops, nil
}

// Extras: the fields added after the first release, each a tag byte and
// its value, after a count; a field at its zero value is left out, so an
// old ticket or op costs one byte more. A tag this build does not know
// fails the decoding: a record with a new field comes with a new version.
const (
	tagPriority    = 1 // varint
	tagDue         = 2 // time
	tagDeadline    = 3 // time
	tagMaxAttempts = 4 // uvarint
	tagBackoffBase = 5 // uvarint nanoseconds
	tagBackoffMax  = 6 // uvarint nanoseconds
	tagWorker      = 7 // string
	tagStarted     = 8 // time
	// Ops of record version 5 only (an OpAdopt's history elsewhere).
	tagAttempts   = 9  // uvarint
	tagDispatched = 10 // uvarint 1
)

// adoptedExtras are the extras only an op of record version 5 may carry:
// OpAdopt's Attempts and Dispatched.
type adoptedExtras struct {
	attempts   int
	dispatched bool
}

// maxWorkerName bounds a worker's name in a record.
const maxWorkerName = 256

func appendExtras(b []byte, l *Lifecycle, started time.Time, worker string, adopted *adoptedExtras) []byte {
	n := 0
	count := func(set bool) {
		if set {
			n++
		}
	}
	count(l.Priority != 0)
	count(!l.Due.IsZero())
	count(!l.Deadline.IsZero())
	count(l.Retry.MaxAttempts != 0)
	count(l.Retry.Base != 0)
	count(l.Retry.Max != 0)
	count(worker != "")
	count(!started.IsZero())
	if adopted != nil {
		count(adopted.attempts != 0)
		count(adopted.dispatched)
	}
	b = binary.AppendUvarint(b, uint64(n))
	if l.Priority != 0 {
		b = binary.AppendVarint(append(b, tagPriority), int64(l.Priority))
	}
	if !l.Due.IsZero() {
		b = appendTime(append(b, tagDue), l.Due)
	}
	if !l.Deadline.IsZero() {
		b = appendTime(append(b, tagDeadline), l.Deadline)
	}
	if l.Retry.MaxAttempts != 0 {
		b = binary.AppendUvarint(append(b, tagMaxAttempts), uint64(max(l.Retry.MaxAttempts, 0)))
	}
	if l.Retry.Base != 0 {
		b = binary.AppendUvarint(append(b, tagBackoffBase), uint64(max(l.Retry.Base, 0)))
	}
	if l.Retry.Max != 0 {
		b = binary.AppendUvarint(append(b, tagBackoffMax), uint64(max(l.Retry.Max, 0)))
	}
	if worker != "" {
		b = appendString(append(b, tagWorker), worker[:min(len(worker), maxWorkerName)])
	}
	if !started.IsZero() {
		b = appendTime(append(b, tagStarted), started)
	}
	if adopted != nil && adopted.attempts != 0 {
		b = binary.AppendUvarint(append(b, tagAttempts), uint64(max(adopted.attempts, 0)))
	}
	if adopted != nil && adopted.dispatched {
		b = binary.AppendUvarint(append(b, tagDispatched), 1)
	}
	return b
}

// extras reads the tagged fields; adopted is nil where the record may not
// carry an adoption's (a ticket, an op below record version 5).
func (d *decoder) extras(l *Lifecycle, started *time.Time, worker *string, adopted *adoptedExtras) {
	n := d.count(2)
	for range n {
		switch tag := d.byte(); tag {
		case tagPriority:
			p := d.varint()
			if p < int64(PriorityLow) || p > int64(PriorityHigh) {
				d.fail("priority %d", p)
			}
			l.Priority = Priority(p)
		case tagDue:
			l.Due = d.time()
		case tagDeadline:
			l.Deadline = d.time()
		case tagMaxAttempts:
			v := d.uvarint()
			if v > maxAttempts {
				d.fail("max attempts %d", v)
			}
			l.Retry.MaxAttempts = int(v)
		case tagBackoffBase, tagBackoffMax:
			v := d.uvarint()
			if v > math.MaxInt64 {
				d.fail("backoff %d", v)
			}
			if tag == tagBackoffBase {
				l.Retry.Base = time.Duration(v)
			} else {
				l.Retry.Max = time.Duration(v)
			}
		case tagWorker:
			if *worker = d.string(); len(*worker) > maxWorkerName {
				d.fail("worker name of %d bytes", len(*worker))
			}
		case tagStarted:
			*started = d.time()
		case tagAttempts:
			v := d.uvarint()
			if adopted == nil || v == 0 || v > maxAttempts {
				d.fail("attempts %d where none may be", v)
			}
			if adopted != nil {
				adopted.attempts = int(v)
			}
		case tagDispatched:
			if v := d.uvarint(); adopted == nil || v != 1 {
				d.fail("dispatched %d where none may be", v)
			}
			if adopted != nil {
				adopted.dispatched = true
			}
		default:
			d.fail("unknown field tag %d", tag)
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFrames(b []byte, frames [][]byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(frames)))
	for _, f := range frames {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// appendTime stores seconds and nanoseconds separately: UnixNano overflows
// for the zero time and beyond year 2262, and every time must round-trip.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// decoder reads a record front to back. The first failure sticks in err
// and every later read returns a zero value, so callers check err once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and checks that the rest of the input can
// hold that many elements of at least min bytes each, which bounds what a
// damaged count can make us allocate.
func (d *decoder) count(min int) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.b)/min) {
		d.fail("count %d exceeds input", v)
		return 0
	}
	return int(v)
}

// bytes returns the next n bytes without copying them.
func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("length %d exceeds input", n)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.stringBytes()) }

// stringBytes is the next string, not copied.
func (d *decoder) stringBytes() []byte {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("string length %d exceeds input", n)
	}
	return d.bytes(int(n))
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= uint64(time.Second) {
		d.fail("nanoseconds %d", nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// frames decodes a frame count and the frames, copying them into a single
// allocation whose size is bounded by the input.
func (d *decoder) frames() [][]byte {
	n := d.count(1)
	if d.err != nil {
		return nil
	}
	frames := make([][]byte, n)
	total := 0
	for i := range frames {
		l := d.uvarint()
		if d.err == nil && l > uint64(len(d.b)) {
			d.fail("frame length %d exceeds input", l)
		}
		if frames[i] = d.bytes(int(l)); d.err != nil {
			return nil
		}
		total += len(frames[i])
	}
	// The frames still point into the input (a bbolt page); move them to
	// memory of our own.
	buf := make([]byte, total)
	for i, f := range frames {
		p := buf[:len(f):len(f)]
		copy(p, f)
		frames[i], buf = p, buf[len(f):]
	}
	return frames
}
