package node_test

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic/node"
)

// Helpers of the tests that read a node's /metrics through its HTTP
// listener.

// scrapeNode reads the node's /metrics into samples by "name{labels}".
func scrapeNode(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

func metricsNode(t *testing.T) (*nodetest.Node, string, *client.Client) {
	t.Helper()
	cfg := nodetest.Config(t.TempDir())
	addr := harness.FreeAddr(t)
	cfg.HTTP = &node.HTTPConfig{Listen: addr, Version: "test"}
	n := nodetest.Start(t, cfg)
	c, err := client.New(client.Config{Brokers: []string{n.Endpoint()}, Timeout: 2 * time.Second, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return n, addr, c
}
