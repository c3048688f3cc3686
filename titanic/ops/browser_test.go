package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/ops"
)

// TestDashboardBrowser loads the dashboard in headless Chromium (Debian's
// chromium package, installed here when missing and running as root):
// the rendered page must show a ticket the fakes hold, and a screenshot
// is kept as a test artefact in $TITANIC_ARTIFACTS (default: a temporary
// directory, logged).
func TestDashboardBrowser(t *testing.T) {
	chromium := findChromium(t)
	start := time.Now()

	const token = "dashboard-test-token"
	fx := newFixture(t, func(c *ops.Config) {
		c.Token = token
		c.Version = "v0.5.0-test"
		c.Workers = workersFunc(func(context.Context) ([]ops.ServiceWorkers, error) {
			return []ops.ServiceWorkers{
				{Service: "echo", Workers: 3, Idle: 2, Busy: 1},
				{Service: "invoice.render", Workers: 4, Busy: 4},
			}, nil
		})
		c.Counters = countersFunc(func() ops.Counts {
			return ops.Counts{Submits: 18342, Replies: 18291, Dispatches: 18377, Redeliveries: 35, Failures: 2,
				Commits: 6120, Leased: 5, Lookups: 40210}
		})
		c.Clients = clientsFunc(func(_ context.Context, limit int) ([]ops.Client, int, error) {
			now := time.Now()
			cs := []ops.Client{
				{ID: "billing-7f3a", Since: now.Add(-3 * time.Hour), Seen: now.Add(-2 * time.Second)},
				{ID: "thumbnailer-02", Since: now.Add(-14 * time.Minute), Seen: now.Add(-4 * time.Second)},
			}
			return cs[:min(limit, len(cs))], len(cs), nil
		})
		jobs := newFakeJobs(c.Tickets.(*fakeTickets))
		jobs.paused["resize"] = time.Now()
		c.Jobs = jobs
		c.Cluster = &fakeCluster{status: ops.ClusterStatus{
			Mode: ops.ModeGroup, Role: ops.RoleLeader, Active: true, NodeID: "n1", Leader: "n1",
			Term: 4, LastIndex: 18342, CommitIndex: 18342, AppliedIndex: 18340,
			Members: []ops.Member{
				{ID: "n1", Addr: "10.0.0.1:7000", Voter: true, Leader: true},
				{ID: "n2", Addr: "10.0.0.2:7000", Voter: true},
				{ID: "n3", Addr: "10.0.0.3:7000", Voter: true},
			},
		}}
	})
	// A few more tickets, so that the page looks like a working node.
	now := time.Now()
	for i, st := range []store.State{store.StatePending, store.StatePending, store.StateDispatched, store.StateDone, store.StatePending, store.StateDone} {
		fx.tickets.add([]string{"invoice.render", "resize"}[i%2], st, now.Add(time.Duration(i-20)*time.Second), nil)
	}
	submitted := fx.tickets.add("echo", store.StatePending, now.Add(-2*time.Second), nil) // the ticket the page must show
	deadLetter := fx.tickets.add("invoice.render", store.StateFailed, now.Add(-3*time.Second), nil)

	url := serveDashboard(t, fx, token)

	dom := runChromium(t, chromium, "--dump-dom", url)
	for _, want := range []string{submitted.String(), fx.done.String(), "invoice.render", "leader · serving", "10.0.0.2:7000", "billing-7f3a", "live · updated",
		"Dead letters", deadLetter.String(), `<span class="pill paused">paused</span>`, `data-service="resize">Resume</button>`, `data-service="echo">Pause</button>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(dom, "token required") || !strings.Contains(dom, `id="auth" class="auth" hidden`) {
		t.Error("the page did not authenticate with the token from the URL fragment")
	}
	if t.Failed() {
		t.Logf("rendered page:\n%s", dom)
	}

	// #ticket=ID opens the ticket: its reply is shown, decoded.
	dom = runChromium(t, chromium, "--dump-dom", url+"&ticket="+fx.done.String())
	for _, want := range []string{"<pre>hello</pre>", "reply[1] (base64)", "<pre>/wA=</pre>", "Close ticket"} {
		if !strings.Contains(dom, want) {
			t.Errorf("ticket detail lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("rendered page:\n%s", dom)
	}

	dir := os.Getenv("TITANIC_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot, err := filepath.Abs(filepath.Join(dir, "dashboard.png"))
	if err != nil {
		t.Fatal(err)
	}
	runChromium(t, chromium, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if sz := img.Bounds().Size(); sz.X != 1280 || sz.Y != 900 {
		t.Errorf("screenshot is %v, want 1280x900", sz)
	}
	// The ticket detail, for people to look at.
	detail := filepath.Join(filepath.Dir(shot), "dashboard-ticket.png")
	runChromium(t, chromium, "--screenshot="+detail, "--window-size=1280,1100", "--hide-scrollbars", url+"&ticket="+fx.done.String())
	if _, err := os.Stat(detail); err != nil {
		t.Errorf("no ticket screenshot: %v", err)
	}
	t.Logf("screenshots: %s (%d bytes), %s; browser test took %v", shot, len(b), detail, time.Since(start).Round(time.Millisecond))
}

// serveDashboard serves fx on a free port of 127.0.0.1 until the test
// ends and returns the dashboard's URL with token.
func serveDashboard(t *testing.T, fx *fixture, token string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- fx.srv.ListenAndServe(ctx, "127.0.0.1:0", func(a net.Addr) { addrc <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	select {
	case a := <-addrc:
		// The token travels in the fragment, which is never sent to the
		// server: the page takes it from there.
		return "http://" + a.String() + "/#token=" + token
	case err := <-errc:
		t.Fatal(err)
		return ""
	}
}

var installChromium sync.Once

// findChromium returns the chromium binary, installing Debian's package
// when it is missing and the test runs as root. Otherwise it skips, except
// in CI ($CI set, as CI runners do), where a browser test that does not
// run must fail: `make test` installs chromium (test-deps). In -short
// mode it skips: the browser tests are not short.
func findChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	skip := t.Skip
	if os.Getenv("CI") != "" {
		skip = func(args ...any) { t.Fatal(append([]any{"CI is set, so the browser test must run:"}, args...)...) }
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		skip("chromium is not installed and the test is not root: apt-get install chromium to run the browser test")
	}
	installChromium.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		install := func(args ...string) error {
			cmd := exec.CommandContext(ctx, "apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Logf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(out, 2000))
			}
			return err
		}
		t.Log("installing chromium (apt-get install -y chromium)")
		if install("install", "-y", "-q", "chromium") != nil {
			if install("update", "-q") == nil {
				_ = install("install", "-y", "-q", "chromium")
			}
		}
	})
	p, err := exec.LookPath("chromium")
	if err != nil {
		skip("chromium is not installed and apt-get install chromium failed (see log); skipping the browser test")
	}
	return p
}

// runChromium runs headless Chromium on url with args and returns its
// standard output.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000",
	}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.Bytes(), 4000))
	}
	t.Logf("chromium %s: %v", args[0], time.Since(start).Round(time.Millisecond))
	return stdout.String()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestDashboardRetryBrowser drives the dashboard of the built binary in
// headless Chromium through chromedp: a ticket fails (a worker that exits
// non-zero, one attempt allowed), the page opened on it shows its request
// body and its attempt history, a real click on Retry sends it round
// again, and once the worker answers the page shows it done. Screenshots
// of both views are kept in $TITANIC_ARTIFACTS (default: a temporary
// directory, logged).
func TestDashboardRetryBrowser(t *testing.T) {
	chromium := findChromium(t)
	start := time.Now()

	ep := harness.FreeEndpoint(t)
	httpAddr := harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--http-listen", httpAddr, "--max-attempts", "1")
	// The worker fails until the flag file exists, with an error on stderr
	// that the attempt history must show.
	flag := filepath.Join(t.TempDir(), "healthy")
	script := `if [ -e "$1" ]; then tr a-z A-Z; else echo "boom: not healthy yet" >&2; exit 3; fi`
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "flaky", "--", "sh", "-c", script, "sh", flag)

	base := "http://" + httpAddr
	id := httpSubmit(t, base, `{"service":"flaky","body":"hello retry"}`)
	waitState(t, base, id, "failed", 30*time.Second)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1100),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx
		t.Fatalf("start chromium: %v", err)
	}
	// step runs actions within d; on failure it shows the ticket view.
	step := func(what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, d)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			defer dcancel()
			html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("%s: %v (within %v)\npage:\n%s", what, err, d, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	step("open the failed ticket", 30*time.Second,
		chromedp.Navigate(base+"/#ticket="+id),
		chromedp.WaitVisible(chromedp.CSS("#detail #attempts")),
		chromedp.WaitVisible(chromedp.CSS("#detail #retry")))
	detail := text("#detail")
	for _, want := range []string{id, "flaky", "failed", "hello retry", "Attempt history", "boom: not healthy yet"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the failed ticket's view lacks %q:\n%s", want, detail)
		}
	}
	if dead := text("#dead"); !strings.Contains(dead, id) {
		t.Errorf("the dead letters list lacks the ticket:\n%s", dead)
	}
	dir := artifactDir(t)
	// shot keeps a screenshot with the ticket's view in sight.
	shot := func(name string) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		if err := chromedp.Do(sctx, chromedp.ScrollIntoView(chromedp.CSS("#detail"))); err != nil {
			t.Fatalf("scroll to the ticket: %v", err)
		}
		b, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("screenshot is not a PNG: %v", err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(b))
	}
	shot("dashboard-failed.png")
	if t.Failed() {
		t.FailNow()
	}

	// The worker recovers; Retry, clicked, sends the ticket round again.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	step("click Retry, then see the ticket done", 30*time.Second,
		chromedp.Click(chromedp.CSS("#detail #retry")),
		chromedp.WaitVisible(chromedp.CSS("#detail dd .pill.done")))
	step("see the reply", 10*time.Second, chromedp.WaitVisible(chromedp.CSS("#detail pre")))
	detail = text("#detail")
	for _, want := range []string{"HELLO RETRY", "hello retry", "Attempt history", "boom: not healthy yet"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the retried ticket's view lacks %q:\n%s", want, detail)
		}
	}
	if strings.Contains(detail, "null") || strings.Contains(detail, "undefined") {
		t.Errorf("the ticket's view shows a JavaScript null or undefined:\n%s", detail)
	}
	shot("dashboard-retried.png")
	waitState(t, base, id, "done", 5*time.Second)
	t.Logf("retry browser test took %v", time.Since(start).Round(time.Millisecond))
}

// artifactDir is $TITANIC_ARTIFACTS (created), or a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TITANIC_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// httpSubmit submits over the HTTP API and returns the ticket.
func httpSubmit(t *testing.T, base, body string) string {
	t.Helper()
	resp, err := http.Post(base+"/api/v1/tickets", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit %s: %d %+v %v", body, resp.StatusCode, out, err)
	}
	return out.ID
}

// waitState polls the ticket until it is in state, for at most d.
func waitState(t *testing.T, base, id, state string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		code, body := get(t, base+"/api/v1/tickets/"+id, "")
		var tk struct{ State, Reason string }
		if code == http.StatusOK && json.Unmarshal([]byte(body), &tk) == nil {
			if tk.State == state {
				return
			}
			last = body
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s not %s within %v; last answer %d %s", id, state, d, code, last)
		}
		time.Sleep(50 * time.Millisecond) // polling the API: no event to wait on from outside
	}
}
