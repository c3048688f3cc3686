package mdp

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

// The fuzz targets build frames from the input by splitting it on '|', so
// "|MDPC01|echo|hi" is ["" | "MDPC01" | "echo" | "hi"]. Seed corpora, with a
// valid message of every command and many invalid ones, are in
// testdata/fuzz/<target>/.
const sep = '|'

func split(data []byte) [][]byte { return bytes.Split(data, []byte{sep}) }

func clone(frames [][]byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = bytes.Clone(f)
	}
	return out
}

func validService(s []byte) bool { return len(s) >= 1 && len(s) <= MaxServiceName && utf8.Valid(s) }

// FuzzParseBroker checks that ParseBroker never panics, never modifies its
// input, fails only with ErrMalformed, and that what it accepts re-encodes
// to the same frames. It also encodes messages from the input's frames and
// checks that they parse back.
func FuzzParseBroker(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := split(data)
		orig := clone(frames)
		m, err := ParseBroker(frames)
		if !equalFrames(frames, orig) {
			t.Fatalf("ParseBroker modified its input: %q became %q", orig, frames)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if errors.Is(err, ErrNoBody) && (m.Kind != KindClient || !validService([]byte(m.Service)) || len(m.Body) != 0) {
				t.Fatalf("%q: no body, with %+v", frames, m)
			}
		} else {
			if m.Kind == KindClient || m.Command == Ready {
				if !validService([]byte(m.Service)) {
					t.Fatalf("accepted service name of %d bytes", len(m.Service))
				}
			}
			if got := encodeMessage(m); !equalFrames(got, frames) {
				t.Fatalf("%q parsed as %+v, which encodes to %q", frames, m, got)
			}
		}

		// Encode, then parse: the frames' first part as service or
		// client address, the rest as body.
		head, body := frames[0], frames[1:]
		cm, err := ParseBroker(ClientRequest(string(head), body...))
		switch {
		case validService(head) && len(body) > 0:
			if err != nil || cm.Kind != KindClient || cm.Service != string(head) || !equalFrames(cm.Body, body) {
				t.Fatalf("client request %q, %q parsed as %+v, %v", head, body, cm, err)
			}
		case err == nil:
			t.Fatalf("client request %q, %q accepted as %+v", head, body, cm)
		}
		rm, err := ParseBroker(WorkerCommand(Ready, head))
		if validService(head) != (err == nil) || (err == nil && rm.Service != string(head)) {
			t.Fatalf("READY %q parsed as %+v, %v", head, rm, err)
		}
		em, err := ParseBroker(WorkerEnvelope(Reply, head, body...))
		switch {
		case len(body) > 0:
			if err != nil || em.Command != Reply || !bytes.Equal(em.Client, head) || !equalFrames(em.Body, body) {
				t.Fatalf("REPLY %q, %q parsed as %+v, %v", head, body, em, err)
			}
		case err == nil:
			t.Fatalf("REPLY without body accepted as %+v", em)
		}
	})
}

// FuzzParseWorker checks that ParseWorker never panics, fails only with
// ErrMalformed, and that what it accepts re-encodes to the same frames.
func FuzzParseWorker(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := split(data)
		orig := clone(frames)
		tw, err := ParseWorker(frames)
		if !equalFrames(frames, orig) {
			t.Fatalf("ParseWorker modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		} else {
			var got [][]byte
			switch tw.Command {
			case Request:
				got = WorkerEnvelope(Request, tw.Client, tw.Body...)
			case Heartbeat, Disconnect:
				got = WorkerCommand(tw.Command)
			default:
				t.Fatalf("accepted command %s", tw.Command)
			}
			if !equalFrames(got, frames) {
				t.Fatalf("%q parsed as %+v, which encodes to %q", frames, tw, got)
			}
		}
		// Encode a REQUEST from the frames, then parse it.
		head, body := frames[0], frames[1:]
		rq, err := ParseWorker(WorkerEnvelope(Request, head, body...))
		switch {
		case len(body) > 0:
			if err != nil || rq.Command != Request || !bytes.Equal(rq.Client, head) || !equalFrames(rq.Body, body) {
				t.Fatalf("REQUEST %q, %q parsed as %+v, %v", head, body, rq, err)
			}
		case err == nil:
			t.Fatalf("REQUEST without body accepted as %+v", rq)
		}
	})
}

// FuzzParseReply checks that ParseReply never panics, fails only with
// ErrMalformed, accepts only replies for the service asked for, and that
// what it accepts re-encodes to the same frames.
func FuzzParseReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, service string) {
		frames := split(data)
		body, err := ParseReply(frames, service)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		} else if got := ClientReply(service, body...); !equalFrames(got, frames) {
			t.Fatalf("%q for %q parsed as %q, which encodes to %q", frames, service, body, got)
		}
		// Encode a reply, then parse it.
		enc := ClientReply(service, frames...)
		got, err := ParseReply(enc, service)
		if err != nil || !equalFrames(got, frames) {
			t.Fatalf("reply %q for %q parsed as %q, %v", frames, service, got, err)
		}
	})
}
