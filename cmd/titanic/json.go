package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/titanicmq/titanic/client"
)

// --json: the commands that print results print one JSON object per line
// instead (one line for the commands with one result, one line per ticket
// for wait), for scripts; README "JSON output" lists the fields. Errors
// stay text on stderr with the same exit codes. Byte fields (bodies,
// replies) are lists of frames in base64, as in the HTTP API, with a
// _text twin when the frames are UTF-8.

const jsonHelp = "print JSON for scripts: one object per line (README, \"JSON output\")"

func addJSONFlag(fs *flag.FlagSet) *bool { return fs.Bool("json", false, jsonHelp) }

// printJSON writes v as one line.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// framesText is the frames joined, as the text commands print them, when
// that is UTF-8 (nil otherwise: the base64 frames are the only form).
func framesText(frames [][]byte) *string {
	var s []byte
	for _, f := range frames {
		s = append(s, f...)
	}
	if !utf8.Valid(s) {
		return nil
	}
	t := string(s)
	return &t
}

// statusJSON is `status --json` (and the ticket part of the others): the
// field names of the HTTP API's ticket.
type statusJSON struct {
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	State    string    `json:"state"`
	Attempts int       `json:"attempts"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Reason   string    `json:"reason,omitempty"`
	// Body, with --body: the request's frames.
	Body     [][]byte `json:"body,omitempty"`
	BodyText *string  `json:"body_text,omitempty"`
	// History, with --attempts: the attempts that ended without a reply.
	History []attemptJSON `json:"history,omitempty"`
}

func toStatusJSON(st client.Status, body [][]byte, withBody bool) statusJSON {
	out := statusJSON{ID: st.Ticket, Service: st.Service, State: st.State, Attempts: st.Attempts,
		Created: st.Created.UTC(), Updated: st.Updated.UTC(), Reason: st.Reason}
	if withBody {
		out.Body = body
		if out.Body == nil {
			out.Body = [][]byte{}
		}
		out.BodyText = framesText(body)
	}
	return out
}

// replyJSON is `reply --json` and `submit --wait --json`.
type replyJSON struct {
	ID        string   `json:"id"`
	State     string   `json:"state"`
	Reply     [][]byte `json:"reply"`
	ReplyText *string  `json:"reply_text,omitempty"`
}

func toReplyJSON(ticket string, frames [][]byte) replyJSON {
	if frames == nil {
		frames = [][]byte{}
	}
	return replyJSON{ID: ticket, State: "done", Reply: frames, ReplyText: framesText(frames)}
}
