package zsock

/*
#cgo !windows pkg-config: libzmq
#include <zmq.h>
#include <string.h>
#include <errno.h>

// zs_recv receives the frames of one message into buf, at most nsizes of
// them, in one call from Go: pebbe/zmq4 makes six calls per frame. It
// returns the number of frames taken, each frame's size in sizes; *more
// is set when frames of the message remain. A frame that does not fit in
// what is left of buf is left in *pending (open; *more set, its size in
// *pendsize) for zs_take. With peercap > 0, the Peer-Address (the IP
// address of a TCP peer) of the first frame that has one is copied into
// peer, its length in *peerlen (left as it is while none has: a ROUTER's
// routing id frame of a peer's first message has none). -1 and errno: a frame could
// not be received (EAGAIN when flags has ZMQ_DONTWAIT and no message
// waits).
static int zs_recv(void *sock, int flags, char *buf, size_t cap, size_t *sizes, int nsizes, int *more, zmq_msg_t *pending, size_t *pendsize, char *peer, int peercap, int *peerlen) {
	size_t used = 0;
	int n = 0;
	*more = 0;
	*pendsize = 0;
	while (n < nsizes) {
		zmq_msg_t msg;
		zmq_msg_init(&msg);
		int rc;
		do {
			rc = zmq_msg_recv(&msg, sock, n == 0 ? flags : 0);
		} while (rc < 0 && errno == EINTR); // as pebbe/zmq4 does by default
		if (rc < 0) {
			int e = errno;
			zmq_msg_close(&msg);
			errno = e;
			return -1;
		}
		size_t sz = zmq_msg_size(&msg);
		int m = zmq_msg_more(&msg);
		if (peercap > 0 && *peerlen == 0) {
			const char *a = zmq_msg_gets(&msg, "Peer-Address");
			size_t l = a ? strlen(a) : 0;
			if (l > 0 && l <= (size_t)peercap) {
				memcpy(peer, a, l);
				*peerlen = (int)l;
			}
		}
		if (sz > cap - used) {
			// Hand the frame over with libzmq's own move, not a copy of
			// the opaque struct.
			zmq_msg_init(pending);
			zmq_msg_move(pending, &msg);
			zmq_msg_close(&msg);
			*pendsize = sz;
			*more = 1;
			return n;
		}
		if (sz > 0) {
			memcpy(buf + used, zmq_msg_data(&msg), sz);
		}
		zmq_msg_close(&msg);
		used += sz;
		sizes[n++] = sz;
		if (!m) {
			return n;
		}
	}
	*more = 1;
	return n;
}

// zs_take copies the frame zs_recv left pending into dst (its size) and
// closes it; it returns whether more frames follow it.
static int zs_take(zmq_msg_t *pending, char *dst) {
	size_t sz = zmq_msg_size(pending);
	if (sz > 0) {
		memcpy(dst, zmq_msg_data(pending), sz);
	}
	int m = zmq_msg_more(pending);
	zmq_msg_close(pending);
	return m;
}

// zs_discard closes the frame zs_recv left pending, when there is one,
// and receives and closes the frames that remain of the message, copying
// nothing: the rest of a message refused for its frame count. It returns
// the number of frames it received, or -1 with errno.
static long zs_discard(void *sock, zmq_msg_t *pending, int haspending, int more) {
	long n = 0;
	if (haspending) {
		more = zmq_msg_more(pending);
		zmq_msg_close(pending);
	}
	while (more) {
		zmq_msg_t msg;
		zmq_msg_init(&msg);
		int rc;
		do {
			rc = zmq_msg_recv(&msg, sock, 0);
		} while (rc < 0 && errno == EINTR);
		if (rc < 0) {
			int e = errno;
			zmq_msg_close(&msg);
			errno = e;
			return -1;
		}
		more = zmq_msg_more(&msg);
		zmq_msg_close(&msg);
		n++;
	}
	return n;
}

// zs_send sends n frames laid end to end in buf (sizes in sizes) as one
// message, each with flags (ZMQ_SNDMORE added but to the last). It
// returns -1 when every frame went, else the index of the frame that
// failed, with errno.
static int zs_send(void *sock, int flags, const char *buf, const size_t *sizes, int n) {
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		int f = flags | (i < n - 1 ? ZMQ_SNDMORE : 0);
		int rc;
		do {
			rc = zmq_send(sock, buf + off, sizes[i], f);
		} while (rc < 0 && errno == EINTR); // as pebbe/zmq4 does by default
		if (rc < 0) {
			return i;
		}
		off += sizes[i];
	}
	return -1;
}

// zs_events returns the socket's ZMQ_EVENTS, or -1 with errno. The value
// is the result, not written through a pointer: a Go pointer handed to C
// is an allocation (pebbe/zmq4's GetEvents makes one per call).
static int zs_events(void *sock) {
	int v = 0;
	size_t sz = sizeof v;
	int rc;
	do {
		rc = zmq_getsockopt(sock, ZMQ_EVENTS, &v, &sz);
	} while (rc < 0 && errno == EINTR); // as Readable.events did
	return rc < 0 ? -1 : v;
}
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"syscall"
	"unsafe"

	zmq "github.com/pebbe/zmq4"
)

// Frames receives and sends whole messages on one socket with one cgo
// call each, where pebbe/zmq4 makes one per frame to send and six per
// frame to receive (init, receive, data, copy, close, ZMQ_RCVMORE). A
// received message is copied into one allocation that its frames share
// (each frame's capacity ends where it does, so appending to one never
// writes over the next).
//
// It needs the libzmq socket inside a *zmq.Socket, which pebbe/zmq4 does
// not export: it reads it where pebbe/zmq4 v1.4 keeps it, and only after
// checking at start-up, by reflection, that the struct still has that
// shape. When it has not (another version), or the socket is closed,
// Frames calls pebbe/zmq4's methods: the same results, more calls.
//
// Frames belongs to the goroutine that owns its socket.
type Frames struct {
	sock  *zmq.Socket
	raw   bool // the layout check passed
	limit int  // frames per message Recv accepts
	buf   []byte
	sizes [maxFrames]C.size_t
	// zs_recv's results, here rather than on the stack: a pointer passed
	// to C makes its variable escape.
	more     C.int
	pend     C.zmq_msg_t
	pendSize C.size_t
	lens     []int // Recv's frame sizes, reused
	maxBytes int   // bytes per message Recv accepts; 0: any
	// The last message's Peer-Address, when SetPeerAddress asked for it.
	wantPeer bool
	peer     [peerCap]byte
	peerLen  C.int
}

// peerCap holds an IPv6 address with its zone.
const peerCap = 64

// maxFrames is the number of frames one cgo receive takes; a message with
// more takes more calls.
const maxFrames = 64

// DefaultMaxFrames is the number of frames per message that Recv and
// RecvMessage accept unless told otherwise: every 7/MDP and 9/TSP message
// of titanic has fewer than 16, so this leaves room for envelopes and
// extensions while one peer's message of a million empty frames (which
// ZMQ_MAXMSGSIZE, a bound per frame, lets through) is refused.
const DefaultMaxFrames = 1024

// ErrTooLarge is returned, wrapped in a *TooLargeError, for a message
// of more bytes than the receiver accepts (SetMaxBytes): ZMQ_MAXMSGSIZE
// bounds each frame, not the message. The message is gone by then: its
// frames past the bound were received and discarded without being kept.
var ErrTooLarge = errors.New("message too large")

// TooLargeError describes a message refused for its size.
type TooLargeError struct {
	// Bytes is how many bytes had been received when it was refused (its
	// size, or more than the bound).
	Bytes int
	// First is the start of its first frame (at most 255 bytes): on a
	// ROUTER, the sender's routing id.
	First []byte
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%v: over %d bytes", ErrTooLarge, e.Bytes)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// ErrTooManyFrames is returned, wrapped in a *TooManyFramesError, for a
// message with more frames than the receiver accepts. The message is gone
// by then: its frames were received and discarded without being kept.
var ErrTooManyFrames = errors.New("message has too many frames")

// TooManyFramesError describes a refused message.
type TooManyFramesError struct {
	// Frames is the number of frames the message had.
	Frames int
	// First is the start of its first frame (a ROUTER's routing id), at
	// most 255 bytes, for logs.
	First []byte
	// Head is the start of its first frames (at most headFrames, each cut
	// to 255 bytes): the envelope and header, which an answer needs.
	Head [][]byte
}

// headFrames is how many frames a TooManyFramesError keeps: a routing
// id, the empty delimiter, the protocol header, the service, and two
// more (an idempotency key, say).
const headFrames = 6

// headOf returns the first frames of data split by sizes, cut as in
// TooManyFramesError.Head.
func headOf(data []byte, sizes []int) [][]byte {
	var head [][]byte
	off := 0
	for _, sz := range sizes[:min(len(sizes), headFrames)] {
		end := min(off+sz, len(data))
		head = append(head, firstBytes(data[off:end]))
		off = end
	}
	return head
}

func (e *TooManyFramesError) Error() string {
	return fmt.Sprintf("%d frames: %v", e.Frames, ErrTooManyFrames)
}

func (e *TooManyFramesError) Unwrap() error { return ErrTooManyFrames }

func firstBytes(b []byte) []byte { return bytes.Clone(b[:min(len(b), 255)]) }

// scratchSize is the buffer a message is received into before it is
// copied out to the caller's allocation: larger frames take two more
// calls of their own.
const scratchSize = 64 << 10

// socketLayout is pebbe/zmq4's Socket as this file reads it.
type socketLayout struct {
	soc    unsafe.Pointer
	ctx    unsafe.Pointer
	opened bool
}

var layoutOK = sync.OnceValue(func() bool {
	t := reflect.TypeFor[zmq.Socket]()
	want := reflect.TypeFor[socketLayout]()
	if t.NumField() < want.NumField() {
		return false
	}
	for i := range want.NumField() {
		f, w := t.Field(i), want.Field(i)
		if f.Name != w.Name || f.Offset != w.Offset || f.Type.Size() != w.Type.Size() || f.Type.Kind() != w.Type.Kind() && !(w.Name == "ctx" && f.Type.Kind() == reflect.Pointer) {
			return false
		}
	}
	return true
})

// NewFrames returns a Frames for sock that accepts messages of up to
// DefaultMaxFrames frames.
func NewFrames(sock *zmq.Socket) *Frames {
	return &Frames{sock: sock, raw: layoutOK(), limit: DefaultMaxFrames}
}

// SetMaxFrames sets the number of frames per message Recv accepts; n < 1
// means DefaultMaxFrames.
func (fr *Frames) SetMaxFrames(n int) {
	if n < 1 {
		n = DefaultMaxFrames
	}
	fr.limit = n
}

// SetMaxBytes sets the bytes per message Recv accepts (n < 1: any). A
// larger message is discarded past the bound, copied no further, and
// Recv returns a *TooLargeError.
func (fr *Frames) SetMaxBytes(n int) { fr.maxBytes = max(n, 0) }

// SetPeerAddress makes Recv keep each message's Peer-Address (libzmq's
// message property: the IP address of a TCP peer), read with
// PeerAddress. It costs each message a lookup, so it is off by default.
func (fr *Frames) SetPeerAddress(on bool) { fr.wantPeer = on }

// PeerAddress returns the IP address the last message Recv returned came
// from: empty when SetPeerAddress was not called, for a transport
// without one (ipc: libzmq gives "localhost:UID:GID:PID" there; inproc),
// or when the socket falls back to pebbe/zmq4.
func (fr *Frames) PeerAddress() string {
	if !fr.wantPeer || fr.peerLen == 0 {
		return ""
	}
	a := string(fr.peer[:fr.peerLen])
	if _, err := netip.ParseAddr(a); err != nil {
		return ""
	}
	return a
}

// handle returns the libzmq socket, or nil when Frames must fall back.
func (fr *Frames) handle() unsafe.Pointer {
	if !fr.raw {
		return nil
	}
	return rawHandle(fr.sock)
}

// rawHandle returns sock's libzmq socket, nil when it is closed; only
// when layoutOK.
func rawHandle(sock *zmq.Socket) unsafe.Pointer {
	l := (*socketLayout)(unsafe.Pointer(sock))
	if !l.opened || l.soc == nil {
		return nil
	}
	return l.soc
}

// rawEvents is ZMQ_EVENTS of the libzmq socket h (see rawHandle).
func rawEvents(h unsafe.Pointer) (zmq.State, error) {
	v, err := C.zs_events(h)
	if v < 0 {
		return 0, errno(err)
	}
	return zmq.State(v), nil
}

// errno turns the error of a cgo call into what pebbe/zmq4 returns.
func errno(err error) error {
	var e syscall.Errno
	if errors.As(err, &e) {
		return zmq.Errno(e)
	}
	if err == nil {
		return zmq.Errno(syscall.EINVAL)
	}
	return err
}

// Recv receives one message, as (*zmq.Socket).RecvMessageBytes(flags)
// does: the same frames, the same errors (EAGAIN with zmq.DONTWAIT when
// none waits). A message of more frames than the limit (SetMaxFrames) is
// received and discarded frame by frame, keeping at most the limit's
// worth, and Recv returns a *TooManyFramesError. libzmq itself has the
// whole message in memory before the first frame is handed over (it
// delivers multipart messages atomically): what this bounds is what the
// caller allocates and handles, and the message is freed as it is read.
func (fr *Frames) Recv(flags zmq.Flag) ([][]byte, error) {
	if fr.limit < 1 {
		fr.limit = DefaultMaxFrames
	}
	fr.peerLen = 0
	h := fr.handle()
	if h == nil {
		return RecvMessage(fr.sock, flags, fr.limit)
	}
	peercap := C.int(0)
	if fr.wantPeer {
		peercap = peerCap
	}
	if fr.buf == nil {
		fr.buf = make([]byte, scratchSize)
	}
	var (
		chunks [][]byte // the message so far, when it takes more than one call
		sizes  = fr.lens[:0]
		total  int
		f      = C.int(flags) // the first frame's; the others are there already
	)
	for {
		// At most one frame past the limit: enough to know the message
		// is over it.
		want := min(maxFrames, fr.limit+1-len(sizes))
		n, err := C.zs_recv(h, f, (*C.char)(unsafe.Pointer(&fr.buf[0])), C.size_t(len(fr.buf)),
			&fr.sizes[0], C.int(want), &fr.more, &fr.pend, &fr.pendSize,
			(*C.char)(unsafe.Pointer(&fr.peer[0])), peercap, &fr.peerLen)
		if n < 0 {
			return nil, errno(err)
		}
		f = 0
		if fr.peerLen > 0 {
			peercap = 0 // found
		}
		used := 0
		for _, sz := range fr.sizes[:n] {
			sizes = append(sizes, int(sz))
			used += int(sz)
		}
		if fr.maxBytes > 0 && total+used+int(fr.pendSize) > fr.maxBytes {
			first := fr.first(chunks, sizes, n)
			size := total + used + int(fr.pendSize)
			fr.lens = sizes[:0]
			if _, err := fr.discard(h); err != nil {
				return nil, err
			}
			return nil, &TooLargeError{Bytes: size, First: first}
		}
		if pend := fr.pendSize > 0; len(sizes) > fr.limit || len(sizes) == fr.limit && (pend || fr.more != 0) {
			first := fr.first(chunks, sizes, n)
			var head [][]byte
			if chunks == nil {
				head = headOf(fr.buf[:used], sizes)
			} else {
				head = headOf(joinChunks(append(chunks, fr.buf[:used]), total+used), sizes)
			}
			d, err := fr.discard(h)
			fr.lens = sizes[:0]
			if err != nil {
				return nil, err
			}
			total := len(sizes) + d
			if pend {
				total++
			}
			return nil, &TooManyFramesError{Frames: total, First: first, Head: head}
		}
		if fr.more == 0 && chunks == nil {
			// The usual case: the whole message in one call.
			fr.lens = sizes
			return split(fr.buf[:used], sizes), nil
		}
		chunks = append(chunks, append([]byte(nil), fr.buf[:used]...))
		total += used
		if fr.pendSize > 0 {
			// A frame larger than the buffer: straight into its own.
			big := make([]byte, int(fr.pendSize))
			more := C.zs_take(&fr.pend, (*C.char)(unsafe.Pointer(&big[0])))
			chunks = append(chunks, big)
			sizes = append(sizes, len(big))
			total += len(big)
			if more == 0 {
				break
			}
			continue
		}
		if fr.more == 0 {
			break
		}
	}
	fr.lens = sizes
	return split(joinChunks(chunks, total), sizes), nil
}

// first returns the start of a refused message's first frame (at most
// 255 bytes): from the chunks so far, or from the buffer of the call
// that took n frames.
func (fr *Frames) first(chunks [][]byte, sizes []int, n C.int) []byte {
	switch {
	case chunks != nil:
		return firstBytes(chunks[0][:min(sizes[0], len(chunks[0]))])
	case len(sizes) > 0 && n > 0:
		return firstBytes(fr.buf[:sizes[0]])
	}
	return nil
}

// discard receives and drops what remains of the message being read:
// the frame zs_recv left pending, and those after it.
func (fr *Frames) discard(h unsafe.Pointer) (int, error) {
	hp := C.int(0)
	if fr.pendSize > 0 {
		hp = 1
	}
	d, err := C.zs_discard(h, &fr.pend, hp, fr.more)
	if d < 0 {
		return 0, errno(err)
	}
	return int(d), nil
}

// RecvMessage receives one message from sock as RecvMessageBytes(flags)
// does, but accepts at most limit frames (limit < 1: DefaultMaxFrames):
// the frames of a longer message are received and discarded one by one
// and it returns a *TooManyFramesError. It is for sockets read with
// pebbe/zmq4's methods, one cgo call per frame.
func RecvMessage(sock *zmq.Socket, flags zmq.Flag, limit int) ([][]byte, error) {
	if limit < 1 {
		limit = DefaultMaxFrames
	}
	var msg, head [][]byte
	n := 0
	var first []byte
	for {
		f, err := sock.RecvBytes(flags)
		if err != nil {
			return nil, err
		}
		flags = 0
		if n == 0 {
			first = f
		}
		if n < headFrames {
			head = append(head, firstBytes(f))
		}
		n++
		if n <= limit {
			msg = append(msg, f)
		} else if msg != nil {
			msg = nil // refused: let the frames go
		}
		more, err := sock.GetRcvmore()
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
	}
	if n > limit {
		return nil, &TooManyFramesError{Frames: n, First: firstBytes(first), Head: head}
	}
	return msg, nil
}

func joinChunks(chunks [][]byte, total int) []byte {
	all := make([]byte, 0, total)
	for _, c := range chunks {
		all = append(all, c...)
	}
	return all
}

// split copies data into one new allocation and cuts it into frames of
// the given sizes. An empty frame is a non-nil empty slice, as pebbe/zmq4
// returns it.
func split(data []byte, sizes []int) [][]byte {
	own := make([]byte, len(data))
	copy(own, data)
	frames := make([][]byte, len(sizes))
	off := 0
	for i, sz := range sizes {
		frames[i] = own[off : off+sz : off+sz]
		off += sz
	}
	return frames
}

// Send sends frames as one message with flags on each frame (zmq.SNDMORE
// is added to all but the last). It returns -1 and nil when every frame
// went, else the index of the frame that failed and its error, which is
// what (*zmq.Socket).SendBytes returns for it; the frames before it went.
func (fr *Frames) Send(frames [][]byte, flags zmq.Flag) (int, error) {
	return fr.send("", false, frames, flags)
}

// SendTo sends to, then frames, as one message: a ROUTER's routing id
// first. Its results are those of Send, to being frame 0.
func (fr *Frames) SendTo(to string, frames [][]byte, flags zmq.Flag) (int, error) {
	return fr.send(to, true, frames, flags)
}

func (fr *Frames) send(head string, withHead bool, frames [][]byte, flags zmq.Flag) (int, error) {
	h := fr.handle()
	n := len(frames)
	if withHead {
		n++
	}
	if h == nil || n > maxFrames {
		return fr.sendEach(head, withHead, frames, flags)
	}
	total := len(head)
	for _, f := range frames {
		total += len(f)
	}
	if total > scratchSize {
		return fr.sendEach(head, withHead, frames, flags)
	}
	if fr.buf == nil {
		fr.buf = make([]byte, scratchSize)
	}
	off, k := 0, 0
	if withHead {
		off = copy(fr.buf, head)
		fr.sizes[0] = C.size_t(len(head))
		k = 1
	}
	for _, f := range frames {
		fr.sizes[k] = C.size_t(len(f))
		off += copy(fr.buf[off:], f)
		k++
	}
	i, err := C.zs_send(h, C.int(flags), (*C.char)(unsafe.Pointer(&fr.buf[0])), &fr.sizes[0], C.int(n))
	if i < 0 {
		return -1, nil
	}
	return int(i), errno(err)
}

func (fr *Frames) sendEach(head string, withHead bool, frames [][]byte, flags zmq.Flag) (int, error) {
	k := 0
	if withHead {
		fl := flags
		if len(frames) > 0 {
			fl |= zmq.SNDMORE
		}
		if _, err := fr.sock.Send(head, fl); err != nil {
			return 0, err
		}
		k = 1
	}
	for i, f := range frames {
		fl := flags
		if i < len(frames)-1 {
			fl |= zmq.SNDMORE
		}
		if _, err := fr.sock.SendBytes(f, fl); err != nil {
			return k + i, err
		}
	}
	return -1, nil
}
