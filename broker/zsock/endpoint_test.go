package zsock

import (
	"strings"
	"testing"
)

func TestCheckEndpoint(t *testing.T) {
	for _, tc := range []struct {
		ep   string
		bind bool
		want string // "": valid
	}{
		{"tcp://127.0.0.1:5555", false, ""},
		{"tcp://[::1]:5555", false, ""},
		{"tcp://broker.example:5555", false, ""},
		{"tcp://*:5555", true, ""},
		{"tcp://127.0.0.1:*", true, ""},
		{"tcp://127.0.0.1:0", true, ""},
		{"ipc:///tmp/titanic.sock", false, ""},
		{"inproc://x", true, ""},
		{"ws://127.0.0.1:5555", false, ""},
		{"tcp://127.0.0.1", false, "want tcp://HOST:PORT"},
		{"tcp://127.0.0.1", true, "want tcp://HOST:PORT"},
		{"tcp://127.0.0.1:99999", false, "PORT 1 to 65535"},
		{"tcp://127.0.0.1:99999", true, "PORT 0 to 65535"},
		{"tcp://127.0.0.1:0", false, "PORT 1 to 65535"},
		{"tcp://127.0.0.1:*", false, "PORT 1 to 65535"},
		{"tcp://*:5555", false, "want tcp://HOST:PORT"},
		{"tcp://:5555", false, "want tcp://HOST:PORT"},
		{"127.0.0.1:5555", false, "write tcp://127.0.0.1:5555"},
		{" tcp://127.0.0.1:5555", false, "transport://address"},
		{"", false, "empty"},
		{"udp://127.0.0.1:5555", true, "want an endpoint tcp://HOST:PORT"},
	} {
		err := CheckEndpoint(tc.ep, tc.bind)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckEndpoint(%q, %v) = %v, want nil", tc.ep, tc.bind, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckEndpoint(%q, %v) = %v, want an error saying %q", tc.ep, tc.bind, err, tc.want)
		}
	}
}
