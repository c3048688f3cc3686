package titanic

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// ExtensionsVersion is the version of the titanic.* services beyond 9/TSP
// (submit, status, list, wait, backup, presence, stats): `titanic version` prints
// it. A broker that lacks a service answers 400 "unknown titanic
// service". It moves when a service's frames change in a way an older peer misreads;
// added trailing frames (the key that titanic.submit answers end with)
// do not move it: readers of every release ignore frames they do not know.
const ExtensionsVersion = 1

// The codes, service names and refusal kinds of 9/TSP and its extensions
// are in package tsp, which the client shares.

// MaxIdemKey bounds an idempotency key.
const MaxIdemKey = 128

// DefaultListLimit and MaxListLimit bound titanic.list pages.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// errBadRequest is wrapped by every TSP request parsing error; the client
// gets 400 with the text.
var errBadRequest = errors.New(string(tsp.BadRequest))

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// submitReq is a parsed titanic.request or titanic.submit.
type submitReq struct {
	idemKey string
	service string
	body    [][]byte
	// lifecycle is what a submit asks beyond 9/TSP (delay, priority,
	// deadline, retry policy), in absolute times.
	lifecycle store.Lifecycle
}

// parseSubmit parses the body of titanic.request ([service | body...]) or,
// with keyed, of titanic.submit ([key | service | body...]).
func parseSubmit(body [][]byte, keyed bool) (submitReq, error) {
	var r submitReq
	if keyed {
		if len(body) < 1 || len(body[0]) == 0 || len(body[0]) > MaxIdemKey {
			return r, badRequest("idempotency key must be 1 to %d bytes", MaxIdemKey)
		}
		r.idemKey = string(body[0])
		body = body[1:]
	}
	// 9/TSP: the request has a service frame and at least one body frame.
	if len(body) < 2 {
		return r, badRequest("want a service name frame and at least one body frame")
	}
	svc := body[0]
	if err := checkServiceName(string(svc)); err != nil {
		return r, err
	}
	if len(body)-1 > tsp.MaxBodyFrames {
		return r, badRequest("body of %d frames: at most %d", len(body)-1, tsp.MaxBodyFrames)
	}
	r.service = string(svc)
	r.body = body[1:]
	return r, nil
}

// checkServiceName is the one check of a service name a request names to
// submit to, pause or resume: 1 to mdp.MaxServiceName bytes of UTF-8, not
// a service internal to the broker.
func checkServiceName(svc string) error {
	switch {
	case len(svc) == 0:
		return badRequest("empty service name")
	case len(svc) > mdp.MaxServiceName:
		return badRequest("service name longer than %d bytes", mdp.MaxServiceName)
	case !utf8.ValidString(svc):
		return badRequest("service name is not valid UTF-8")
	case strings.HasPrefix(svc, tsp.Prefix), strings.HasPrefix(svc, "mmi."):
		return badRequest("service %q is internal to the broker", svc)
	}
	return nil
}

// parseTicket parses a body that is exactly one ticket frame.
func parseTicket(body [][]byte) (store.ID, error) {
	if len(body) != 1 {
		return store.ID{}, badRequest("want exactly one ticket frame, got %d frames", len(body))
	}
	id, err := store.ParseID(string(body[0]))
	if err != nil {
		return store.ID{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return id, nil
}

// parseList parses titanic.list: [service | state | after | limit], each
// frame possibly empty.
func parseList(body [][]byte) (store.Filter, error) {
	var f store.Filter
	if len(body) != 4 {
		return f, badRequest("titanic.list wants 4 frames (service, state, after, limit), got %d", len(body))
	}
	f.Service = string(body[0])
	if len(f.Service) > mdp.MaxServiceName {
		return f, badRequest("service name longer than %d bytes", mdp.MaxServiceName)
	}
	if len(body[1]) > 0 {
		st, err := store.ParseState(string(body[1]))
		if err != nil {
			return f, fmt.Errorf("%w: %w", errBadRequest, err)
		}
		f.State = st
	}
	if len(body[2]) > 0 {
		id, err := store.ParseID(string(body[2]))
		if err != nil {
			return f, fmt.Errorf("%w: %w", errBadRequest, err)
		}
		f.After = id
	}
	f.Limit = DefaultListLimit
	if len(body[3]) > 0 {
		n, err := strconv.Atoi(string(body[3]))
		if err != nil || n < 1 {
			return f, badRequest("limit %q is not a positive number", body[3])
		}
		f.Limit = min(n, MaxListLimit)
	}
	return f, nil
}

// RefuseFrames answers a request the broker discarded for its frame count
// (broker.Config.RefuseFrames): 400, saying so, with a titanic.submit's key
// echoed as on every answer to it.
func RefuseFrames(service string, head [][]byte, frames int) [][]byte {
	err := badRequest("request of %d frames, more than the broker takes: a body may hold at most %d", frames, tsp.MaxBodyFrames)
	return echoKey(service, replyText(tsp.CodeUnknown, err.Error()), head)
}

func reply(code string, frames ...[]byte) [][]byte {
	return append([][]byte{[]byte(code)}, frames...)
}

func replyText(code, text string) [][]byte {
	return [][]byte{[]byte(code), []byte(text)}
}
