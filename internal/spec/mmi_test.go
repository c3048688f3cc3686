package spec

import "testing"

// TestMMIServiceNotFoundForUnservedTitanicNames: 8/MMI's mmi.service
// answers "200" only when the named service is there to serve. The broker
// answered 200 for every name under "titanic." because a handler owns the
// prefix, though it serves only some of them: a name it does not know is
// answered "400 unknown titanic service". A spec-only client that checks
// mmi.service before it sends (as the Guide's Titanic does before each
// dispatch) was told such a service exists.
func TestMMIServiceNotFoundForUnservedTitanicNames(t *testing.T) {
	ep, _ := startBroker(t)
	// The ones 9/TSP defines are there.
	for _, name := range []string{"titanic.request", "titanic.reply", "titanic.close"} {
		if got := tspCall(t, ep, "mmi.service", name); len(got) != 1 || string(got[0]) != "200" {
			t.Errorf("mmi.service %q = %s, want [200]", name, show(got))
		}
	}
	for _, name := range []string{"titanic.bogus", "titanic.", "titanic.cluster.role"} {
		served := tspCall(t, ep, name, "0123456789abcdef0123456789abcdef")
		got := tspCall(t, ep, "mmi.service", name)
		if string(got[0]) == "200" && string(served[0]) == "400" {
			t.Errorf("mmi.service %q = %s, but a request to it is answered %s", name, show(got), show(served))
		}
	}
}
