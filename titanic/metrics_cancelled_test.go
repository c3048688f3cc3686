package titanic_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
	tnode "github.com/titanicmq/titanic/titanic/node"
)

// Cancelled tickets are in titanic_tickets: found by an outside-in test of
// the job lifecycle.

// README (HTTP): /metrics has "tickets by state ... per service
// (titanic_tickets)"; titanic/ops/doc.go: "stored tickets by state". A
// cancelled ticket is stored (until closed or swept, and the HTTP API's
// /services counts it under "cancelled"), yet titanic_tickets has no
// cancelled series: a service whose only tickets are cancelled shows 0 in
// every state, and cancelled tickets are invisible to monitoring.
func TestMetricsCountCancelledTickets(t *testing.T) {
	dir, ep := t.TempDir(), restartPort(t)
	httpAddr := strings.TrimPrefix(restartPort(t), "tcp://")
	nc := nodetest.Config(dir)
	nc.Broker.Endpoints = []string{ep}
	nc.Service = titanic.DefaultConfig()
	nc.Service.Logger = nodetest.Quiet
	nc.HTTP = &tnode.HTTPConfig{Listen: httpAddr, Version: "test"}
	nodetest.Start(t, nc)
	c := restartClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, err := c.Submit(ctx, "gone", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, tk); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var lines []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, `titanic_tickets{service="gone"`) {
			lines = append(lines, l)
		}
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `state="cancelled"`) && strings.HasSuffix(l, " 1") }) {
		t.Fatalf("a stored cancelled ticket is not in titanic_tickets: %q", lines)
	}
}
