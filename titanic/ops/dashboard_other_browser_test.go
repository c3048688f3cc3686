package ops_test

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/titanic/ops"
)

// Beyond Config.MaxServices, the dashboard shows the services the API
// lists and one last row summing the others, without buttons: it is no
// service to pause or retry.
func TestDashboardSumsOmittedServicesBrowser(t *testing.T) {
	chromium := findChromium(t)
	const token = "dashboard-test-token"
	// echo (3 tickets, 3 workers) is shown; resize (1 ticket) and
	// mmi.nothing (4 plain requests) are summed.
	fx := newFixture(t, func(c *ops.Config) {
		c.Token = token
		c.MaxServices = 1
	})
	dom := runChromium(t, chromium, "--dump-dom", serveDashboard(t, fx, token))
	for _, want := range []string{`data-service="echo">Pause</button>`, `<tr class="other">`, "2 more services"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	for _, unwanted := range []string{`data-service="resize"`, `data-service="(other)"`} {
		if strings.Contains(dom, unwanted) {
			t.Errorf("rendered page has %q: a service left out has a button", unwanted)
		}
	}
	if t.Failed() {
		t.Logf("rendered page:\n%s", dom)
	}
}
