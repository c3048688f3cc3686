package titanic

import (
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// A submit refuses a service name that is not valid UTF-8 ("service name
// is not valid UTF-8"), and so do titanic.pause and .resume (titanic
// pause, the HTTP API's POST /api/v1/services/%FF/pause): one check of a
// service name. Otherwise the pause is stored for good, `titanic stats`
// lists a paused service whose name prints as replacement characters, and
// the JSON API answers it as "\ufffd", a name that is not the one stored.
func TestPauseRefusesInvalidServiceName(t *testing.T) {
	h := newHarness(t, Config{}, "")
	r := h.call(tsp.SvcPause, "\xfa\xfb")
	if codeOf(r) == tsp.CodeOK {
		t.Errorf("pause of a service named %q (not UTF-8) = %q, want 400 as a submit to it gets", "\xfa\xfb", r)
	}
}

// The rules are a submit's, for pause and resume alike; a resume still
// clears a name paused before the check (by an older release).
func TestPauseTakesTheNamesASubmitTakes(t *testing.T) {
	h := newHarness(t, Config{}, "")
	for _, name := range []string{"", "titanic.request", "mmi.service", string(make([]byte, 256))} {
		for _, svc := range []string{tsp.SvcPause, tsp.SvcResume} {
			if r := h.call(svc, name); codeOf(r) != tsp.CodeUnknown {
				t.Errorf("%s of %q = %q, want 400", svc, name, r)
			}
		}
	}
	if r := h.call(tsp.SvcPause, "caf\u00e9"); codeOf(r) != tsp.CodeOK {
		t.Errorf("pause of a UTF-8 name = %q, want 200", r)
	}
	h.svc.d.setPaused("\xfa\xfb", true) // as loaded from an older release's store
	if r := h.call(tsp.SvcResume, "\xfa\xfb"); codeOf(r) != tsp.CodeOK {
		t.Errorf("resume of a paused name that is not UTF-8 = %q, want 200: a stale pause must be clearable", r)
	}
}
