package ops_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ops"
)

// The HTTP API refuses "attempts": 0 as titanic.submit2 does: found by
// an outside-in test of the job lifecycle.

// README, Bounds: "One validator checks the lifecycle options, whichever
// way they come (titanic.submit2, so the CLI and the Go client, and the
// HTTP API's JSON ...) with one set of bounds": attempts "1 to 1000".
// titanic.submit2 refuses attempts=0 ("want a number from 1 to 1000"),
// the HTTP API takes `"attempts": 0` (201) and stores the broker's
// default.
func TestHTTPSubmitRefusesAttemptsZero(t *testing.T) {
	if _, err := titanic.ParseSubmitOptions("attempts=0", time.Now()); err == nil {
		t.Fatal("titanic.submit2 took attempts=0; this test assumes it refuses it")
	}
	sub := &fakeSubmitter{}
	fx := newFixture(t, func(c *ops.Config) { c.Submitter = sub })
	rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x","attempts":0}`)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf(`HTTP submit with "attempts":0: %d %s, want 400 naming attempts, as titanic.submit2 refuses attempts=0`, rec.Code, rec.Body)
	}
}
