package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// A broker endpoint without its transport (--broker 127.0.0.1:5555, or the
// same in $TITANIC_BROKERS: the form of --http-listen and --raft-bind) is a
// bad command line that says what to write, not libzmq's "connect
// 127.0.0.1:5555: invalid argument" and exit 1.
func TestClientBrokerEndpointWithoutTransportSaysWhatToWrite(t *testing.T) {
	addr := harness.FreeAddr(t) // never dialed: refused before
	for _, args := range [][]string{
		{"submit", "--broker", addr, "upper", "x"},
		{"status", "--broker", addr, "0123456789abcdef0123456789abcdef"},
		{"wait", "--broker", addr, "0123456789abcdef0123456789abcdef"},
		{"stats", "--broker", addr},
		{"worker", "--broker", addr, "upper", "--", "cat"},
	} {
		code, _, stderr := runCLI(t, context.Background(), args...)
		if code != exitUsage || !strings.Contains(stderr, "tcp://"+addr) {
			t.Errorf("titanic %s: exit %d, stderr %q; want %d (usage) and the endpoint to write, tcp://%s",
				strings.Join(args, " "), code, strings.TrimSpace(stderr), exitUsage, addr)
		}
	}
	var out, errb strings.Builder
	code := run(context.Background(), []string{"status", "0123456789abcdef0123456789abcdef"},
		[]string{EnvBrokers + "=" + addr}, strings.NewReader(""), &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), EnvBrokers) {
		t.Errorf("status with %s=%s: exit %d, stderr %q; want %d naming $%s", EnvBrokers, addr, code, errb.String(), exitUsage, EnvBrokers)
	}
	// The Go client refuses it too, at New, as a config error.
	if _, err := client.New(client.Config{Brokers: []string{addr}}); !errors.Is(err, client.ErrConfig) || !strings.Contains(err.Error(), "tcp://") {
		t.Errorf("client.New with broker %q: %v; want ErrConfig saying tcp://", addr, err)
	}
}
