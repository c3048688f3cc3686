// Package probe is the wire vocabulary of titanic.cluster.role, the
// question a client with several broker endpoints asks all of them at once
// to find the one that serves. It is a leaf package: the brokers
// (titanic/ha) answer with Encode, the clients read with Parse.
//
// The question is an admin service (titanic/ha AdminPrefix): every node
// answers it, active or not, and in a Binary Star pair it is not a client
// vote, so asking a passive node cannot make it take over. Only a real
// request, sent to one node, votes.
//
// Answer: [200 | "serving=true|false" | "star=<state>" | "why=<text>"], star
// only from a node of a pair (its Binary Star state: active, passive,
// primary, backup), why only from a node that does not serve and can say
// what it waits for (a pair node that has never been in sync with its
// peer). Readers ignore frames they do not know, so why is no new
// version.
// A broker that has no roles (single mode) answers 400 (unknown titanic
// service), and a draining one 500: see Parse.
package probe

import (
	"errors"
	"fmt"
	"strings"
)

// Service is the probe's service name.
const Service = "titanic.cluster.role"

// StarActive is the Binary Star state of the node that serves, or takes
// over.
const StarActive = "active"

// Answer is what a node says of itself.
type Answer struct {
	// Serving: the node serves client requests now.
	Serving bool
	// Star is the node's Binary Star state; empty outside a pair.
	Star string
	// Why says, for people, why a node that does not serve waits; often
	// empty.
	Why string
}

// Encode returns the frames of a's answer.
func Encode(a Answer) [][]byte {
	out := [][]byte{[]byte("200"), []byte(fmt.Sprintf("serving=%t", a.Serving))}
	if a.Star != "" {
		out = append(out, []byte("star="+a.Star))
	}
	if a.Why != "" {
		out = append(out, []byte("why="+a.Why))
	}
	return out
}

// ErrMalformed: the answer is none of those Parse knows.
var ErrMalformed = errors.New("malformed role answer")

// Parse reads a node's answer. A broker without roles (single mode: 400,
// unknown titanic service; or a 200 without a serving frame) serves
// whenever it answers; a broker that refuses everything (500: draining, or
// not active) does not serve.
func Parse(frames [][]byte) (Answer, error) {
	if len(frames) == 0 {
		return Answer{}, fmt.Errorf("%w: no frames", ErrMalformed)
	}
	switch string(frames[0]) {
	case "400":
		return Answer{Serving: true}, nil
	case "500":
		return Answer{}, nil
	case "200":
	default:
		return Answer{}, fmt.Errorf("%w: status %q", ErrMalformed, frames[0])
	}
	a := Answer{Serving: true}
	for _, f := range frames[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "serving":
			a.Serving = v == "true"
		case "star":
			a.Star = v
		case "why":
			a.Why = v
		}
	}
	return a, nil
}
