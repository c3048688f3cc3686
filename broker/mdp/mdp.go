// Package mdp encodes and decodes the frames of 7/MDP (Majordomo Protocol
// 0.1: MDPC01 clients, MDPW01 workers) and holds its constants. It is pure:
// no sockets, no state. The broker, the client and the worker packages all
// speak MDP through it, so there is one parser to fuzz.
//
// # Framing
//
// Every function here works on the frames as they appear after the ROUTER
// identity frame (broker side) or as received on a DEALER socket (client and
// worker side): they all start with the empty delimiter frame.
//
//	client request   ["" | "MDPC01" | service | body...]
//	client reply     ["" | "MDPC01" | service | body...]
//	worker command   ["" | "MDPW01" | command | ...]
package mdp

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Protocol headers.
const (
	ClientHeader = "MDPC01"
	WorkerHeader = "MDPW01"
)

// Command is an MDP worker command byte.
type Command byte

// Worker commands of 7/MDP, and Fail, a titanic extension.
const (
	Ready      Command = 0x01
	Request    Command = 0x02
	Reply      Command = 0x03
	Heartbeat  Command = 0x04
	Disconnect Command = 0x05
	// Fail is a titanic extension to MDPW01: a worker reports that it could
	// not handle the request it holds, with a reason, instead of replying.
	// ["" | "MDPW01" | 0x0F | client | "" | reason]. Brokers that do not
	// know it drop it as invalid, as 7/MDP says; the request then expires.
	Fail Command = 0x0F
)

func (c Command) String() string {
	switch c {
	case Ready:
		return "READY"
	case Request:
		return "REQUEST"
	case Reply:
		return "REPLY"
	case Heartbeat:
		return "HEARTBEAT"
	case Disconnect:
		return "DISCONNECT"
	case Fail:
		return "FAIL"
	}
	return fmt.Sprintf("command(0x%02x)", byte(c))
}

// MaxServiceName bounds a service name; longer names are invalid.
const MaxServiceName = 255

// ErrMalformed is wrapped by every decoding error: the frames do not form a
// valid MDP message and must be dropped (7/MDP: "SHOULD drop invalid
// messages").
var ErrMalformed = errors.New("malformed MDP message")

// ErrNoBody is wrapped with ErrMalformed by ParseBroker for a client
// request of a valid service name and no body frame, which 7/MDP does not
// allow; the Message it returns then holds the service, so that a broker
// may answer a request for a service it serves itself instead of
// dropping it in silence.
var ErrNoBody = errors.New("no body frame")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Kind tells who sent a message to the broker.
type Kind int

// Message kinds.
const (
	KindClient Kind = iota + 1
	KindWorker
)

// Message is a decoded message received by the broker (after the identity
// frame). Byte slices alias the input frames.
type Message struct {
	Kind Kind
	// Service is the requested service (client) or the service a READY
	// registers (worker).
	Service string
	// Command is the worker command (worker messages only).
	Command Command
	// Client is the client address frame of a worker REPLY or FAIL.
	Client []byte
	// Body is the request body (client) or reply body (worker REPLY), or
	// the single reason frame of FAIL.
	Body [][]byte
}

// ParseBroker decodes a message that arrived at the broker's ROUTER socket,
// without the identity frame.
func ParseBroker(frames [][]byte) (Message, error) {
	if len(frames) < 2 {
		return Message{}, malformed("%d frames, want at least 2", len(frames))
	}
	if len(frames[0]) != 0 {
		return Message{}, malformed("first frame is not empty")
	}
	switch string(frames[1]) {
	case ClientHeader:
		return parseClientRequest(frames)
	case WorkerHeader:
		return parseWorkerToBroker(frames)
	}
	return Message{}, malformed("unknown protocol header %q", truncate(frames[1]))
}

func parseClientRequest(frames [][]byte) (Message, error) {
	// 7/MDP: a REQUEST has at least one body frame.
	if len(frames) < 3 {
		return Message{}, malformed("client request has %d frames, want at least 4", len(frames))
	}
	svc, err := serviceName(frames[2])
	if err != nil {
		return Message{}, err
	}
	if len(frames) == 3 {
		return Message{Kind: KindClient, Service: svc}, fmt.Errorf("%w: %w: client request has 3 frames, want at least 4", ErrMalformed, ErrNoBody)
	}
	return Message{Kind: KindClient, Service: svc, Body: frames[3:]}, nil
}

func parseWorkerToBroker(frames [][]byte) (Message, error) {
	if len(frames) < 3 || len(frames[2]) != 1 {
		return Message{}, malformed("worker message without a one-byte command")
	}
	m := Message{Kind: KindWorker, Command: Command(frames[2][0])}
	switch m.Command {
	case Ready:
		if len(frames) != 4 {
			return Message{}, malformed("READY has %d frames, want 4", len(frames))
		}
		svc, err := serviceName(frames[3])
		if err != nil {
			return Message{}, err
		}
		m.Service = svc
	case Reply:
		if len(frames) < 6 || len(frames[4]) != 0 {
			return Message{}, malformed("REPLY needs [client | \"\" | body...]")
		}
		m.Client, m.Body = frames[3], frames[5:]
	case Fail:
		if len(frames) != 6 || len(frames[4]) != 0 {
			return Message{}, malformed("FAIL needs [client | \"\" | reason]")
		}
		m.Client, m.Body = frames[3], frames[5:]
	case Heartbeat, Disconnect:
		if len(frames) != 3 {
			return Message{}, malformed("%s has %d frames, want 3", m.Command, len(frames))
		}
	default:
		// REQUEST is broker-to-worker only; anything else is unknown.
		return Message{}, malformed("command %s not valid from a worker", m.Command)
	}
	return m, nil
}

func serviceName(b []byte) (string, error) {
	if len(b) == 0 {
		return "", malformed("empty service name")
	}
	if len(b) > MaxServiceName {
		return "", malformed("service name of %d bytes, limit %d", len(b), MaxServiceName)
	}
	if !utf8.Valid(b) {
		// Names end up in logs, metrics labels and JSON, all text.
		return "", malformed("service name is not valid UTF-8")
	}
	return string(b), nil
}

func truncate(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// ToWorker is a decoded broker-to-worker command.
type ToWorker struct {
	Command Command
	Client  []byte   // REQUEST only
	Body    [][]byte // REQUEST only
}

// ParseWorker decodes a message a worker's DEALER socket received.
func ParseWorker(frames [][]byte) (ToWorker, error) {
	if len(frames) < 3 || len(frames[0]) != 0 || string(frames[1]) != WorkerHeader || len(frames[2]) != 1 {
		return ToWorker{}, malformed("not an MDPW01 command")
	}
	t := ToWorker{Command: Command(frames[2][0])}
	switch t.Command {
	case Request:
		if len(frames) < 6 || len(frames[4]) != 0 {
			return ToWorker{}, malformed("REQUEST needs [client | \"\" | body...]")
		}
		t.Client, t.Body = frames[3], frames[5:]
	case Heartbeat, Disconnect:
		if len(frames) != 3 {
			return ToWorker{}, malformed("%s has %d frames, want 3", t.Command, len(frames))
		}
	default:
		return ToWorker{}, malformed("command %s not valid from a broker", t.Command)
	}
	return t, nil
}

// ParseReply decodes a reply a client's DEALER socket received (with the
// empty delimiter frame; a REQ socket strips it, so prepend one) and checks
// it answers service.
func ParseReply(frames [][]byte, service string) ([][]byte, error) {
	if len(frames) < 4 || len(frames[0]) != 0 || string(frames[1]) != ClientHeader {
		return nil, malformed("not an MDPC01 reply")
	}
	if !bytes.Equal(frames[2], []byte(service)) {
		return nil, malformed("reply for service %q, want %q", truncate(frames[2]), service)
	}
	return frames[3:], nil
}

// ClientRequest encodes a client REQUEST as a DEALER sends it.
func ClientRequest(service string, body ...[]byte) [][]byte {
	out := make([][]byte, 0, 3+len(body))
	out = append(out, []byte{}, []byte(ClientHeader), []byte(service))
	return append(out, body...)
}

// ClientReply encodes the broker's reply to a client, without identity.
func ClientReply(service string, body ...[]byte) [][]byte {
	return ClientRequest(service, body...)
}

// WorkerCommand encodes a worker command without a client envelope
// (READY with the service as arg, HEARTBEAT, DISCONNECT).
func WorkerCommand(cmd Command, args ...[]byte) [][]byte {
	out := make([][]byte, 0, 3+len(args))
	out = append(out, []byte{}, []byte(WorkerHeader), []byte{byte(cmd)})
	return append(out, args...)
}

// WorkerEnvelope encodes a REQUEST, REPLY or FAIL: a command carrying a
// client address, an empty frame and a body.
func WorkerEnvelope(cmd Command, client []byte, body ...[]byte) [][]byte {
	out := make([][]byte, 0, 5+len(body))
	out = append(out, []byte{}, []byte(WorkerHeader), []byte{byte(cmd)}, client, []byte{})
	return append(out, body...)
}
