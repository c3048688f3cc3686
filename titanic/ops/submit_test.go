package ops_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/ops"
)

// fakeSubmitter records submits and answers with err when set.
type fakeSubmitter struct {
	err           error
	service, key  string
	body          [][]byte
	calls         int
	duplicateNext bool
	lc            store.Lifecycle
}

func (f *fakeSubmitter) Submit(_ context.Context, service string, body [][]byte, key string, lc store.Lifecycle) (string, bool, error) {
	f.calls++
	f.service, f.body, f.key, f.lc = service, body, key, lc
	if f.err != nil {
		return "", false, f.err
	}
	return "0123456789abcdef0123456789abcdef", f.duplicateNext, nil
}

func postSubmit(fx *fixture, ctype, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/tickets", strings.NewReader(body))
	req.Host = "127.0.0.1:8080"
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	fx.srv.ServeHTTP(rec, req)
	return rec
}

func TestSubmit(t *testing.T) {
	sub := &fakeSubmitter{}
	fx := newFixture(t, func(c *ops.Config) { c.Submitter = sub; c.MaxSubmitBytes = 200 })
	if rec := postSubmit(fx, "application/json", `{"service":"echo","frames":["aGk=","AP8="],"key":"k"}`); rec.Code != http.StatusCreated || !strings.Contains(rec.Body.String(), `"duplicate":false`) {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	if sub.service != "echo" || sub.key != "k" || len(sub.body) != 2 || string(sub.body[0]) != "hi" || string(sub.body[1]) != "\x00\xff" {
		t.Fatalf("submitted %q %q %q", sub.service, sub.body, sub.key)
	}
	sub.duplicateNext = true
	if rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x","key":"k"}`); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"duplicate":true`) {
		t.Fatalf("duplicate submit: %d %s, want 200", rec.Code, rec.Body)
	}
	calls := sub.calls
	for _, tc := range []struct {
		ctype, body string
		code        int
	}{
		{"text/plain", `{"service":"echo","body":"x"}`, http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", `service=echo&body=x`, http.StatusUnsupportedMediaType},
		{"application/json", `{"service":"echo","body":"x","extra":1}`, http.StatusBadRequest},
		{"application/json", `{"service":"echo"}`, http.StatusBadRequest},
		{"application/json", `{"body":"x"}`, http.StatusBadRequest},
		{"application/json", `{"service":"echo","frames":[]}`, http.StatusBadRequest},
		{"application/json", `{"service":"echo","body":"` + strings.Repeat("x", 300) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		if rec := postSubmit(fx, tc.ctype, tc.body); rec.Code != tc.code {
			t.Errorf("POST %s %.40s: %d %s, want %d", tc.ctype, tc.body, rec.Code, rec.Body, tc.code)
		}
	}
	if sub.calls != calls {
		t.Errorf("refused requests reached the Submitter (%d calls)", sub.calls-calls)
	}
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: body too large", ops.ErrBadRequest), http.StatusBadRequest},
		{fmt.Errorf("%w: passive", ops.ErrNotActive), http.StatusServiceUnavailable},
		{fmt.Errorf("%w: queue full", ops.ErrBusy), http.StatusServiceUnavailable},
		{fmt.Errorf("%w: key k names another ticket", ops.ErrConflict), http.StatusConflict},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
	} {
		sub.err = tc.err
		if rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x"}`); rec.Code != tc.code {
			t.Errorf("submit failing with %v: %d %s, want %d", tc.err, rec.Code, rec.Body, tc.code)
		}
	}
}

// A node that is not active refuses before submitting.
func TestSubmitNotActive(t *testing.T) {
	sub := &fakeSubmitter{}
	fx := newFixture(t, func(c *ops.Config) {
		c.Submitter = sub
		c.Cluster = &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RolePassive}}
	})
	if rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x"}`); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not active") || sub.calls != 0 {
		t.Fatalf("submit on a passive node: %d %s, %d calls", rec.Code, rec.Body, sub.calls)
	}
}
