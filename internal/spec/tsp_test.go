package spec

import (
	"strings"
	"testing"
	"time"
)

// TestRequestOfManyFramesAnswered: 9/TSP's titanic.request takes a service
// frame and "Frames 1+: Request body", with no bound. README bounds a body
// at 1000 frames. A request of 1001 to 1019 body frames was stored, and
// one of 1020 or more was dropped by the broker's receive without an
// answer (the frame limit of 1024 counts the envelope): a spec-only
// client's Lazy Pirate tries timed out one after the other and it gave up
// without knowing why. Both are answered 400 (do not retry), saying why.
func TestRequestOfManyFramesAnswered(t *testing.T) {
	ep, _ := startBroker(t)
	for _, n := range []int{1000, 1001, 1020, 5000} {
		body := []string{"many"}
		for range n {
			body = append(body, "b")
		}
		got := call(t, ep, 3*time.Second, "titanic.request", body...)
		want := "400"
		if n <= 1000 {
			want = "200"
		}
		switch {
		case got == nil:
			t.Errorf("titanic.request with %d body frames: no answer within 3s, want %s", n, want)
		case len(got) < 3 || string(got[2]) != want:
			t.Errorf("titanic.request with %d body frames: %s, want %s", n, show(got), want)
		case want == "400" && (len(got) != 4 || !strings.Contains(string(got[3]), "at most 1000")):
			t.Errorf("titanic.request with %d body frames: %s, want the bound said", n, show(got))
		}
	}
}
