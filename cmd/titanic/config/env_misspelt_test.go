package config

import (
	"errors"
	"strings"
	"testing"
)

// README (Configuration): "Unknown keys, misspelt variables and bad values
// stop the broker at start-up with a message naming the setting." A
// variable whose section is misspelt is refused as one of a known section
// is, and as the file refuses the same typo ([securty] → "did you mean
// [security]?"): TITANIC_SECURTY_CURVE=true does not start a broker
// without CURVE, as if the operator had never asked for it.
func TestEnvMisspeltSectionRefused(t *testing.T) {
	for _, kv := range []string{
		"TITANIC_SECURTY_CURVE=true",
		"TITANIC_BROKR_HEARTBEAT=1s",
		"TITANIC_LIMIT_MAX_BODY=1MiB",
	} {
		_, err := Resolve(nil, []string{kv})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want an invalid-configuration error naming it (a misspelt variable)", kv, err)
		}
	}
}

// The refusal says which variable was meant; TITANIC_* variables that are
// no settings (the client's broker list, the tests') are left alone.
func TestEnvMisspeltSectionHintAndNonSettings(t *testing.T) {
	_, err := Resolve(nil, []string{"TITANIC_SECURTY_CURVE=true"})
	if err == nil || !strings.Contains(err.Error(), "TITANIC_SECURTY_CURVE") || !strings.Contains(err.Error(), "did you mean TITANIC_SECURITY_CURVE?") {
		t.Errorf("TITANIC_SECURTY_CURVE: %v; want it named, with TITANIC_SECURITY_CURVE as the hint", err)
	}
	for _, kv := range []string{
		"TITANIC_BROKERS=tcp://127.0.0.1:5555", "TITANIC_PARSE_ONLY=1", "TITANIC_BIN=/bin/titanic",
		"TITANIC_NETNS_REQUIRED=1", "TITANIC_SOAK_STALL=1", "TITANIC_JEPSEN_SEED=3", "TITANIC_READY_WITHIN=5s",
		"TITANIC_RELEASE_CACHE=/tmp", "TITANIC_TESTHOOK_STALL_AT_REPLY=1", "TITANIC_BACKLOG_PAIR_N=4", "TITANIC_ARTIFACTS=/tmp",
	} {
		if _, err := Resolve(nil, []string{kv}); err != nil {
			t.Errorf("%s: %v; it is no setting, to be left alone", kv, err)
		}
	}
}
