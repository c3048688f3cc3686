package zsock

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// CheckEndpoint reports whether a socket can bind (bind true) or connect
// to ep, with an error that says what to write: libzmq refuses a
// malformed endpoint with EINVAL ("invalid argument"), which names
// nothing, and takes tcp://HOST:99999 (connecting for ever to nothing).
// tcp://HOST:PORT is checked whole: to bind, HOST may be * (every
// interface) and PORT * or 0 (any); to connect, PORT is 1 to 65535.
// ipc://PATH and inproc://NAME need their name. To bind, no other
// transport is taken (a titanic broker binds only these); to connect,
// others are left to libzmq.
func CheckEndpoint(ep string, bind bool) error {
	scheme, rest, ok := strings.Cut(ep, "://")
	switch {
	case ep == "":
		return fmt.Errorf("%q: empty: want an endpoint tcp://HOST:PORT", ep)
	case !ok && strings.TrimSpace(ep) == ep:
		// 127.0.0.1:5555, the form of an HTTP address, is the usual slip.
		return fmt.Errorf("%q: want an endpoint tcp://HOST:PORT (transport://address): write tcp://%s", ep, ep)
	case !ok || scheme == "" || rest == "" || strings.TrimSpace(ep) != ep:
		return fmt.Errorf("%q: want an endpoint transport://address, such as tcp://HOST:PORT", ep)
	case scheme == "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" || !bind && host == "*" {
			return fmt.Errorf("%q: want tcp://HOST:PORT", ep)
		}
		if !validPort(port, bind) {
			least := 1
			if bind {
				least = 0
			}
			return fmt.Errorf("%q: want tcp://HOST:PORT, PORT %d to 65535", ep, least)
		}
	case scheme == "ipc", scheme == "inproc":
	case bind:
		return fmt.Errorf("%q: want an endpoint tcp://HOST:PORT (or ipc://PATH)", ep)
	}
	return nil
}

// validPort: 1 to 65535 to connect; 0 to 65535 or * (any) to bind.
func validPort(p string, bind bool) bool {
	if bind && p == "*" {
		return true
	}
	n, err := strconv.Atoi(p)
	if err != nil || n > 65535 {
		return false
	}
	return n > 0 || bind && n == 0
}
