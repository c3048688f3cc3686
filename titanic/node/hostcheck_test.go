package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic/node"
)

// The binary's HTTP listener without a token refuses a request whose Host
// is a name other than localhost with 403, and says what the operator can
// set (http.token / --http-token), not ops.Config.AllowedHosts, a Go field
// that titanic broker never sets and no setting, flag or variable reaches.
func TestHostRefusalNamesARealSetting(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	addr := harness.FreeAddr(t)
	cfg.HTTP = &node.HTTPConfig{Listen: addr, Version: "test"}
	nodetest.Start(t, cfg)
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "ops.example:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Host ops.example without a token: %d %s, want 403", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "AllowedHosts") || !strings.Contains(string(body), "http.token") {
		t.Errorf("403 for a host name = %s; want it to name the settings an operator has (http.token, --http-token), not the Go field AllowedHosts", body)
	}
}
