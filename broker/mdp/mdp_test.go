package mdp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fr builds frames from strings.
func fr(parts ...string) [][]byte {
	out := make([][]byte, len(parts))
	for i, p := range parts {
		out[i] = []byte(p)
	}
	return out
}

func cmd(c Command) string { return string([]byte{byte(c)}) }

func equalFrames(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestParseBroker(t *testing.T) {
	long := strings.Repeat("s", MaxServiceName)
	tests := []struct {
		name   string
		frames [][]byte
		want   Message
		bad    bool
	}{
		{name: "client request", frames: fr("", ClientHeader, "echo", "hello"),
			want: Message{Kind: KindClient, Service: "echo", Body: fr("hello")}},
		{name: "client request, several body frames", frames: fr("", ClientHeader, "echo", "a", "", "c"),
			want: Message{Kind: KindClient, Service: "echo", Body: fr("a", "", "c")}},
		{name: "client request, 255-byte service", frames: fr("", ClientHeader, long, "x"),
			want: Message{Kind: KindClient, Service: long, Body: fr("x")}},
		{name: "client request, empty body frame", frames: fr("", ClientHeader, "echo", ""),
			want: Message{Kind: KindClient, Service: "echo", Body: fr("")}},
		{name: "ready", frames: fr("", WorkerHeader, cmd(Ready), "echo"),
			want: Message{Kind: KindWorker, Command: Ready, Service: "echo"}},
		{name: "reply", frames: fr("", WorkerHeader, cmd(Reply), "client", "", "a", "b"),
			want: Message{Kind: KindWorker, Command: Reply, Client: []byte("client"), Body: fr("a", "b")}},
		{name: "fail", frames: fr("", WorkerHeader, cmd(Fail), "client", "", "why"),
			want: Message{Kind: KindWorker, Command: Fail, Client: []byte("client"), Body: fr("why")}},
		{name: "heartbeat", frames: fr("", WorkerHeader, cmd(Heartbeat)),
			want: Message{Kind: KindWorker, Command: Heartbeat}},
		{name: "disconnect", frames: fr("", WorkerHeader, cmd(Disconnect)),
			want: Message{Kind: KindWorker, Command: Disconnect}},

		{name: "no frames", frames: nil, bad: true},
		{name: "one frame", frames: fr(""), bad: true},
		{name: "garbage", frames: fr("garbage", "more"), bad: true},
		{name: "first frame not empty", frames: fr("x", ClientHeader, "echo", "b"), bad: true},
		{name: "unknown header", frames: fr("", "MDPC02", "echo", "b"), bad: true},
		{name: "client without body", frames: fr("", ClientHeader, "echo"), bad: true},
		{name: "client without service", frames: fr("", ClientHeader), bad: true},
		{name: "client empty service", frames: fr("", ClientHeader, "", "b"), bad: true},
		{name: "client 256-byte service", frames: fr("", ClientHeader, long+"s", "b"), bad: true},
		{name: "client 300-byte service", frames: fr("", ClientHeader, strings.Repeat("x", 300), "b"), bad: true},
		{name: "client service not UTF-8", frames: fr("", ClientHeader, "ec\xffho", "b"), bad: true},
		{name: "ready service not UTF-8", frames: fr("", WorkerHeader, cmd(Ready), "\xc3"), bad: true},
		{name: "worker without command", frames: fr("", WorkerHeader), bad: true},
		{name: "worker two-byte command", frames: fr("", WorkerHeader, "\x01\x01", "echo"), bad: true},
		{name: "worker empty command", frames: fr("", WorkerHeader, "", "echo"), bad: true},
		{name: "ascii command", frames: fr("", WorkerHeader, "1", "echo"), bad: true},
		{name: "ready without service", frames: fr("", WorkerHeader, cmd(Ready)), bad: true},
		{name: "ready empty service", frames: fr("", WorkerHeader, cmd(Ready), ""), bad: true},
		{name: "ready 300-byte service", frames: fr("", WorkerHeader, cmd(Ready), strings.Repeat("x", 300)), bad: true},
		{name: "ready extra frame", frames: fr("", WorkerHeader, cmd(Ready), "echo", "x"), bad: true},
		{name: "reply without body", frames: fr("", WorkerHeader, cmd(Reply), "client", ""), bad: true},
		{name: "reply no empty frame", frames: fr("", WorkerHeader, cmd(Reply), "client", "x", "b"), bad: true},
		{name: "fail two reasons", frames: fr("", WorkerHeader, cmd(Fail), "client", "", "a", "b"), bad: true},
		{name: "fail without reason", frames: fr("", WorkerHeader, cmd(Fail), "client", ""), bad: true},
		{name: "heartbeat extra frame", frames: fr("", WorkerHeader, cmd(Heartbeat), "x"), bad: true},
		{name: "disconnect extra frame", frames: fr("", WorkerHeader, cmd(Disconnect), ""), bad: true},
		{name: "request from worker", frames: fr("", WorkerHeader, cmd(Request), "c", "", "b"), bad: true},
		{name: "unknown command", frames: fr("", WorkerHeader, "\x09"), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBroker(tt.frames)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseBroker = %+v, want an error", got)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBroker: %v", err)
			}
			if got.Kind != tt.want.Kind || got.Service != tt.want.Service || got.Command != tt.want.Command ||
				!bytes.Equal(got.Client, tt.want.Client) || !equalFrames(got.Body, tt.want.Body) {
				t.Fatalf("ParseBroker = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseWorker(t *testing.T) {
	tests := []struct {
		name   string
		frames [][]byte
		want   ToWorker
		bad    bool
	}{
		{name: "request", frames: fr("", WorkerHeader, cmd(Request), "client", "", "a", "b"),
			want: ToWorker{Command: Request, Client: []byte("client"), Body: fr("a", "b")}},
		{name: "heartbeat", frames: fr("", WorkerHeader, cmd(Heartbeat)), want: ToWorker{Command: Heartbeat}},
		{name: "disconnect", frames: fr("", WorkerHeader, cmd(Disconnect)), want: ToWorker{Command: Disconnect}},

		{name: "empty", frames: nil, bad: true},
		{name: "client header", frames: fr("", ClientHeader, cmd(Heartbeat)), bad: true},
		{name: "no delimiter", frames: fr(WorkerHeader, cmd(Heartbeat), ""), bad: true},
		{name: "request without body", frames: fr("", WorkerHeader, cmd(Request), "client", ""), bad: true},
		{name: "request no empty frame", frames: fr("", WorkerHeader, cmd(Request), "client", "x", "b"), bad: true},
		{name: "reply to worker", frames: fr("", WorkerHeader, cmd(Reply), "client", "", "b"), bad: true},
		{name: "ready to worker", frames: fr("", WorkerHeader, cmd(Ready), "echo"), bad: true},
		{name: "heartbeat extra", frames: fr("", WorkerHeader, cmd(Heartbeat), ""), bad: true},
		{name: "long command", frames: fr("", WorkerHeader, "\x04\x04"), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWorker(tt.frames)
			if tt.bad {
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseWorker = %+v, %v; want an ErrMalformed error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWorker: %v", err)
			}
			if got.Command != tt.want.Command || !bytes.Equal(got.Client, tt.want.Client) || !equalFrames(got.Body, tt.want.Body) {
				t.Fatalf("ParseWorker = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		name    string
		frames  [][]byte
		service string
		want    [][]byte
		bad     bool
	}{
		{name: "reply", frames: fr("", ClientHeader, "echo", "a", "b"), service: "echo", want: fr("a", "b")},
		{name: "mmi", frames: fr("", ClientHeader, "mmi.service", "200"), service: "mmi.service", want: fr("200")},
		{name: "other service", frames: fr("", ClientHeader, "other", "a"), service: "echo", bad: true},
		{name: "no body", frames: fr("", ClientHeader, "echo"), service: "echo", bad: true},
		{name: "worker header", frames: fr("", WorkerHeader, "echo", "a"), service: "echo", bad: true},
		{name: "no delimiter", frames: fr(ClientHeader, "echo", "a", "b"), service: "echo", bad: true},
		{name: "empty", frames: nil, service: "echo", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReply(tt.frames, tt.service)
			if tt.bad {
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseReply = %q, %v; want an ErrMalformed error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseReply: %v", err)
			}
			if !equalFrames(got, tt.want) {
				t.Fatalf("ParseReply = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		got  [][]byte
		want [][]byte
	}{
		{"client request", ClientRequest("echo", []byte("a"), []byte("b")), fr("", "MDPC01", "echo", "a", "b")},
		{"client reply", ClientReply("mmi.service", []byte("404")), fr("", "MDPC01", "mmi.service", "404")},
		{"ready", WorkerCommand(Ready, []byte("echo")), fr("", "MDPW01", "\x01", "echo")},
		{"heartbeat", WorkerCommand(Heartbeat), fr("", "MDPW01", "\x04")},
		{"disconnect", WorkerCommand(Disconnect), fr("", "MDPW01", "\x05")},
		{"request", WorkerEnvelope(Request, []byte("c"), []byte("x")), fr("", "MDPW01", "\x02", "c", "", "x")},
		{"reply", WorkerEnvelope(Reply, []byte("c"), []byte("x"), []byte("y")), fr("", "MDPW01", "\x03", "c", "", "x", "y")},
		{"fail", WorkerEnvelope(Fail, []byte("c"), []byte("why")), fr("", "MDPW01", "\x0f", "c", "", "why")},
	}
	for _, tt := range tests {
		if !equalFrames(tt.got, tt.want) {
			t.Errorf("%s: encoded %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestEncodeDoesNotAlias checks that encoders never write into the caller's
// body slice (append on a shared backing array would).
func TestEncodeDoesNotAlias(t *testing.T) {
	body := make([][]byte, 1, 8)
	body[0] = []byte("a")
	_ = ClientRequest("echo", body...)
	_ = WorkerEnvelope(Reply, []byte("c"), body...)
	if got := body[:cap(body)][1]; got != nil {
		t.Fatalf("encoder wrote %q past the body", got)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, frames := range [][][]byte{
		ClientRequest("echo", []byte("x")),
		WorkerCommand(Ready, []byte("echo")),
		WorkerCommand(Heartbeat),
		WorkerCommand(Disconnect),
		WorkerEnvelope(Reply, []byte("\x00\x80\x00\x41\xa7"), []byte("r")),
		WorkerEnvelope(Fail, []byte("token"), []byte("reason")),
	} {
		m, err := ParseBroker(frames)
		if err != nil {
			t.Fatalf("ParseBroker(%q): %v", frames, err)
		}
		if got := encodeMessage(m); !equalFrames(got, frames) {
			t.Fatalf("round trip of %q gave %q", frames, got)
		}
	}
	req := WorkerEnvelope(Request, []byte("c"), []byte("x"))
	tw, err := ParseWorker(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := WorkerEnvelope(tw.Command, tw.Client, tw.Body...); !equalFrames(got, req) {
		t.Fatalf("round trip of %q gave %q", req, got)
	}
}

// encodeMessage re-encodes a message ParseBroker accepted.
func encodeMessage(m Message) [][]byte {
	if m.Kind == KindClient {
		return ClientRequest(m.Service, m.Body...)
	}
	switch m.Command {
	case Ready:
		return WorkerCommand(Ready, []byte(m.Service))
	case Reply, Fail:
		return WorkerEnvelope(m.Command, m.Client, m.Body...)
	case Heartbeat, Disconnect:
		return WorkerCommand(m.Command)
	}
	panic(fmt.Sprintf("unexpected command %s", m.Command))
}

func TestCommandString(t *testing.T) {
	for c, want := range map[Command]string{
		Ready: "READY", Request: "REQUEST", Reply: "REPLY", Heartbeat: "HEARTBEAT",
		Disconnect: "DISCONNECT", Fail: "FAIL", 0x42: "command(0x42)",
	} {
		if got := c.String(); got != want {
			t.Errorf("Command(%#x).String() = %q, want %q", byte(c), got, want)
		}
	}
}
