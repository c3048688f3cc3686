package tsp

import (
	"errors"
	"fmt"
	"strings"
)

// The role probe: titanic.cluster.role (SvcRole) is the question a client
// with several broker endpoints asks all of them at once to find the one
// that serves. The brokers (titanic/ha) answer with EncodeRole, the
// clients read with ParseRole.
//
// It is an admin service: every node answers it, active or not, and in a
// Binary Star pair it is not a client vote, so asking a passive node
// cannot make it take over. Only a real request, sent to one node, votes.
//
// Answer: [200 | "serving=true|false" | "star=<state>" | "why=<text>"],
// star only from a node of a pair (its Binary Star state: active,
// passive, primary, backup), why only from a node that does not serve and
// can say what it waits for (a pair node that has never been in sync with
// its peer). Readers ignore frames they do not know, so why is no new
// version. A broker that has no roles (single mode) answers 400
// (UnknownService), and a draining one 500: see ParseRole.

// StarActive is the Binary Star state of the node that serves, or takes
// over.
const StarActive = "active"

// Role is what a node says of itself.
type Role struct {
	// Serving: the node serves client requests now.
	Serving bool
	// Star is the node's Binary Star state; empty outside a pair.
	Star string
	// Why says, for people, why a node that does not serve waits; often
	// empty.
	Why string
}

// EncodeRole returns the frames of r's answer.
func EncodeRole(r Role) [][]byte {
	out := [][]byte{[]byte(CodeOK), fmt.Appendf(nil, "serving=%t", r.Serving)}
	if r.Star != "" {
		out = append(out, []byte("star="+r.Star))
	}
	if r.Why != "" {
		out = append(out, []byte("why="+r.Why))
	}
	return out
}

// ErrMalformedRole: the role answer is none of those ParseRole knows.
var ErrMalformedRole = errors.New("malformed role answer")

// ParseRole reads a node's answer. A broker without roles (single mode:
// 400, unknown titanic service; or a 200 without a serving frame) serves
// whenever it answers; a broker that refuses everything (500: draining,
// or not active) does not serve.
func ParseRole(frames [][]byte) (Role, error) {
	if len(frames) == 0 {
		return Role{}, fmt.Errorf("%w: no frames", ErrMalformedRole)
	}
	switch string(frames[0]) {
	case CodeUnknown:
		return Role{Serving: true}, nil
	case CodeError:
		return Role{}, nil
	case CodeOK:
	default:
		return Role{}, fmt.Errorf("%w: status %q", ErrMalformedRole, frames[0])
	}
	r := Role{Serving: true}
	for _, f := range frames[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "serving":
			r.Serving = v == "true"
		case "star":
			r.Star = v
		case "why":
			r.Why = v
		}
	}
	return r, nil
}
