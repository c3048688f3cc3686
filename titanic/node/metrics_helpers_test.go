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

// scrapeTries bounds scrapeNode's tries of a scrape cut short.
const scrapeTries = 3

// scrapeNode reads the node's /metrics into samples by "name{labels}".
// A scrape the node cut short at its request timeout (503, "Exceeded
// configured timeout": promhttp's answer past ops.Config.RequestTimeout,
// 10 s) is made again, as Prometheus scrapes again at its next interval,
// up to scrapeTries times: the scrape of TestServiceLabelsBounded's 20,000
// services, under -race on a machine at load 40, took longer once.
func scrapeNode(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	var body []byte
	for try := 1; ; try++ {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || try == scrapeTries {
			t.Fatalf("scrape %d of /metrics: %s %q", try, resp.Status, body)
		}
		t.Logf("scrape %d of /metrics: %s %q: scraping again", try, resp.Status, body)
	}
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
