package zsock

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// TestFramesLayout: the pebbe/zmq4 in go.mod has the shape Frames reads,
// so the tests below exercise the one-call path, not the fallback.
func TestFramesLayout(t *testing.T) {
	if !layoutOK() {
		t.Fatal("pebbe/zmq4's Socket no longer has the layout Frames reads: every call falls back to one cgo call per frame")
	}
}

// recvWithin receives one message with fr, waiting up to within.
func recvWithin(t *testing.T, s *zmq.Socket, fr *Frames) [][]byte {
	t.Helper()
	r, err := NewReadable(s)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Wait(time.Now().Add(within)); err != nil {
		t.Fatalf("no message within %s: %v", within, err)
	}
	msg, err := fr.Recv(zmq.DONTWAIT)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return msg
}

// TestFramesRoundTrip: messages of every shape (empty frames, more frames
// than one call takes, frames larger than the scratch buffer, anywhere in
// the message) arrive as pebbe/zmq4 receives them, both ways.
func TestFramesRoundTrip(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) { testFramesRoundTrip(t, raw) })
	}
}

// testFramesRoundTrip runs with the one-call path (raw) or pebbe/zmq4's
// methods (the fallback).
func testFramesRoundTrip(t *testing.T, raw bool) {
	router, dealer := pair(t)
	rf, df := NewFrames(router), NewFrames(dealer)
	rf.raw, df.raw = raw, raw
	big := bytes.Repeat([]byte("b"), scratchSize+1000)
	many := make([][]byte, 150)
	for i := range many {
		many[i] = fmt.Appendf(nil, "frame %d", i)
	}
	cases := map[string][][]byte{
		"one":          {[]byte("x")},
		"empty frames": {{}, []byte("MDPC01"), {}, []byte("body")},
		"many frames":  many,
		"big first":    {big, []byte("after")},
		"big middle":   {[]byte("before"), big, []byte("after")},
		"big last":     {[]byte("before"), big},
		"big alone":    {big},
		"two big":      {big, {}, big},
		"fill exactly": {bytes.Repeat([]byte("f"), scratchSize-10), bytes.Repeat([]byte("g"), 10), []byte("h")},
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			if i, err := df.Send(msg, zmq.DONTWAIT); err != nil {
				t.Fatalf("dealer send: frame %d: %v", i, err)
			}
			got := recvWithin(t, router, rf)
			if len(got) != len(msg)+1 {
				t.Fatalf("router got %d frames, want %d (routing id and %d)", len(got), len(msg)+1, len(msg))
			}
			if !slices.EqualFunc(got[1:], msg, bytes.Equal) {
				t.Fatalf("router got other frames than were sent")
			}
			// Back, with the routing id as SendTo's head.
			if i, err := rf.SendTo(string(got[0]), got[1:], zmq.DONTWAIT); err != nil {
				t.Fatalf("router send: frame %d: %v", i, err)
			}
			back := recvWithin(t, dealer, df)
			if !slices.EqualFunc(back, msg, bytes.Equal) {
				t.Fatalf("dealer got other frames than were sent back")
			}
			for i, f := range back {
				if f == nil {
					t.Fatalf("frame %d is nil; pebbe/zmq4 returns empty frames as non-nil", i)
				}
			}
			// Frames share one allocation: appending to one must not
			// write over the next.
			if len(back) > 1 {
				next := slices.Clone(back[1])
				_ = append(back[0], 'Z')
				if !bytes.Equal(back[1], next) {
					t.Fatal("appending to frame 0 changed frame 1")
				}
			}
		})
	}
}

// TestFramesErrors: the errors are pebbe/zmq4's: EAGAIN without a message,
// EHOSTUNREACH at frame 0 for an unknown peer of a mandatory ROUTER.
func TestFramesErrors(t *testing.T) {
	router, _ := pair(t)
	if err := router.SetRouterMandatory(1); err != nil {
		t.Fatal(err)
	}
	fr := NewFrames(router)
	if _, err := fr.Recv(zmq.DONTWAIT); zmq.AsErrno(err) != zmq.Errno(syscall.EAGAIN) {
		t.Fatalf("receive with nothing waiting: %v, want EAGAIN", err)
	}
	i, err := fr.SendTo("nobody", [][]byte{[]byte("x")}, zmq.DONTWAIT)
	if zmq.AsErrno(err) != zmq.Errno(syscall.EHOSTUNREACH) || i != 0 {
		t.Fatalf("send to an unknown peer: frame %d, %v; want frame 0, EHOSTUNREACH", i, err)
	}
}

// TestFramesLimit: a message of more frames than the limit is refused
// with ErrTooManyFrames and its frames discarded, whichever call finds it
// over (in the first batch, after a frame too big for the buffer); one of
// exactly the limit arrives; and the message after a refused one arrives
// whole, not the refused one's remainder.
func TestFramesLimit(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) {
			router, dealer := pair(t)
			rf, df := NewFrames(router), NewFrames(dealer)
			rf.raw, df.raw = raw, raw
			const limit = 100 // the routing id is one of them
			rf.SetMaxFrames(limit)
			big := bytes.Repeat([]byte("b"), scratchSize+10)
			mk := func(n int, bigAt int) [][]byte {
				m := make([][]byte, n)
				for i := range m {
					m[i] = []byte{}
				}
				if bigAt >= 0 {
					m[bigAt] = big
				}
				return m
			}
			for _, c := range []struct {
				name   string
				frames int // sent by the dealer; the router adds one
				bigAt  int
				ok     bool
			}{
				{"at the limit", limit - 1, -1, true},
				{"one over", limit, -1, false},
				{"far over", 100_000, -1, false},
				{"big frame past the limit", limit + 5, limit + 2, false},
				{"big frame at the limit", limit, limit - 1, false},
				{"big frame within", limit - 1, 3, true},
				{"big frame in the head, over the limit", limit + 5, 2, false},
			} {
				t.Run(c.name, func(t *testing.T) {
					msg := mk(c.frames, c.bigAt)
					if i, err := df.Send(msg, 0); err != nil {
						t.Fatalf("send: frame %d: %v", i, err)
					}
					if i, err := df.Send([][]byte{[]byte("after")}, 0); err != nil {
						t.Fatalf("send: frame %d: %v", i, err)
					}
					r, err := NewReadable(router)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					if err := r.Wait(time.Now().Add(within)); err != nil {
						t.Fatalf("no message within %s: %v", within, err)
					}
					got, err := rf.Recv(zmq.DONTWAIT)
					var tm *TooManyFramesError
					switch {
					case c.ok && err != nil:
						t.Fatalf("receive: %v", err)
					case c.ok && len(got) != c.frames+1:
						t.Fatalf("got %d frames, want %d", len(got), c.frames+1)
					case !c.ok && !errors.Is(err, ErrTooManyFrames):
						t.Fatalf("receive of %d frames with limit %d: %d frames, %v; want ErrTooManyFrames", c.frames+1, limit, len(got), err)
					case !c.ok && (!errors.As(err, &tm) || tm.Frames != c.frames+1 || len(tm.First) == 0):
						t.Fatalf("refusal %#v: want %d frames and the routing id", tm, c.frames+1)
					}
					if !c.ok {
						// The head: the routing id, then the first frames
						// sent, each cut to 255 bytes (an answer's envelope).
						want := [][]byte{tm.First}
						for _, f := range msg[:headFrames-1] {
							want = append(want, f[:min(len(f), 255)])
						}
						if len(tm.Head) != len(want) {
							t.Fatalf("refusal head of %d frames, want %d", len(tm.Head), len(want))
						}
						for i := range want {
							if !bytes.Equal(tm.Head[i], want[i]) {
								t.Fatalf("refusal head frame %d: %d bytes, want %d", i, len(tm.Head[i]), len(want[i]))
							}
						}
					}
					next := recvWithin(t, router, rf)
					if len(next) != 2 || string(next[1]) != "after" {
						t.Fatalf("the next message has %d frames, want the routing id and \"after\"", len(next))
					}
				})
			}
		})
	}
}

// With SetPeerAddress, Recv keeps the IP address each message came from
// (a TCP peer's), the first message of a peer too (whose routing id frame
// carries none); without it, none.
func TestFramesPeerAddress(t *testing.T) {
	router, dealer := pair(t)
	rf := NewFrames(router)
	rf.SetPeerAddress(true)
	for _, msg := range [][][]byte{{[]byte("first")}, {[]byte("b"), bytes.Repeat([]byte("x"), scratchSize+10)}} {
		if _, err := dealer.SendMessage(msg); err != nil {
			t.Fatal(err)
		}
		recvWithin(t, router, rf)
		if got := rf.PeerAddress(); got != "127.0.0.1" {
			t.Fatalf("PeerAddress of a message of %d frames = %q, want 127.0.0.1", len(msg), got)
		}
	}
	rf.SetPeerAddress(false)
	if _, err := dealer.SendMessage("c"); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, router, rf)
	if got := rf.PeerAddress(); got != "" {
		t.Fatalf("PeerAddress without SetPeerAddress = %q, want none", got)
	}
}

// A message of more bytes than SetMaxBytes allows, in frames each
// small enough, is refused (*TooLargeError) and its frames past the bound
// are discarded, whether it fits one receive call or takes several; the
// next message comes through whole.
func TestFramesMaxBytes(t *testing.T) {
	router, dealer := pair(t)
	rf := NewFrames(router)
	rf.SetMaxBytes(3 * scratchSize)
	chunk := bytes.Repeat([]byte("c"), scratchSize-100)
	for _, msg := range [][][]byte{
		{chunk, chunk, chunk, chunk, []byte("tail")}, // several calls
		{bytes.Repeat([]byte("d"), 4*scratchSize)},   // one frame past the buffer
	} {
		if _, err := dealer.SendMessage(msg); err != nil {
			t.Fatal(err)
		}
		r, err := NewReadable(router)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(time.Now().Add(within)); err != nil {
			t.Fatalf("no message within %s: %v", within, err)
		}
		r.Close()
		var tl *TooLargeError
		if got, err := rf.Recv(zmq.DONTWAIT); !errors.As(err, &tl) || tl.Bytes <= 3*scratchSize || len(tl.First) == 0 {
			t.Fatalf("message of %d frames over the bound: %d frames, %v; want a *TooLargeError past the bound naming the sender", len(msg), len(got), err)
		}
	}
	rf.SetMaxBytes(10)
	if _, err := dealer.SendMessage("12345678901"); err != nil {
		t.Fatal(err)
	}
	r, _ := NewReadable(router)
	_ = r.Wait(time.Now().Add(within))
	r.Close()
	if _, err := rf.Recv(zmq.DONTWAIT); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a message of one call over the bound: %v, want ErrTooLarge", err)
	}
	if _, err := dealer.SendMessage("next"); err != nil {
		t.Fatal(err)
	}
	rf.SetMaxBytes(0)
	if got := recvWithin(t, router, rf); len(got) != 2 || string(got[1]) != "next" {
		t.Fatalf("the message after the refused ones = %q, want [id next]", got)
	}
}

// Over ipc the address is empty (this host), not libzmq's
// "localhost:UID:GID:PID", which is no IP address.
func TestFramesPeerAddressIPC(t *testing.T) {
	c := newTestContext(t)
	router, err := c.ZMQ().NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	dealer, err := c.ZMQ().NewSocket(zmq.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	_ = router.SetLinger(0)
	_ = dealer.SetLinger(0)
	t.Cleanup(func() { _ = router.Close(); _ = dealer.Close() })
	ep := "ipc://" + t.TempDir() + "/s"
	if err := router.Bind(ep); err != nil {
		t.Fatal(err)
	}
	if err := dealer.Connect(ep); err != nil {
		t.Fatal(err)
	}
	rf := NewFrames(router)
	rf.SetPeerAddress(true)
	if _, err := dealer.SendMessage("x"); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, router, rf)
	if got := rf.PeerAddress(); got != "" {
		t.Fatalf("PeerAddress over ipc = %q, want none", got)
	}
}
