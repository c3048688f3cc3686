package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// `titanic version` names the binary and every protocol and record
// version another build may read (README, "Upgrades and releases").
func TestVersionPrintsProtocols(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"version"}, strings.NewReader(""), &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"titanic " + Version, "MDPC01", "MDPW01", "9/TSP extensions", "data file format",
		fmt.Sprintf("replicated ops record  up to %d", store.OpsRecordVersion), "BSTAR1", "TPEER01", "notifications"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
}
