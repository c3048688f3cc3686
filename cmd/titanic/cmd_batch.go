package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/client"
)

// progress prints a one-line progress report on w every interval (and at
// the end), overwriting itself with a carriage return.
type progress struct {
	w       io.Writer
	what    string
	total   int
	done    atomic.Int64
	failed  atomic.Int64
	unknown atomic.Int64 // wait: tickets the broker does not know (shown when any)
	// unreached: wait: tickets whose wait no broker answered (shown when
	// any): not failed, their state is not known.
	unreached atomic.Int64
	start     time.Time
	stop      chan struct{}
	finished  chan struct{}
}

func startProgress(w io.Writer, what string, total int) *progress {
	p := &progress{w: w, what: what, total: total, start: time.Now(), stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(p.finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.print()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.print()
			}
		}
	}()
	return p
}

func (p *progress) print() {
	done, failed, unknown, unreached := p.done.Load(), p.failed.Load(), p.unknown.Load(), p.unreached.Load()
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	counts := fmt.Sprintf("%d failed", failed)
	if unknown > 0 {
		counts += fmt.Sprintf(", %d unknown", unknown)
	}
	if unreached > 0 {
		counts += fmt.Sprintf(", %d with no broker answering", unreached)
	}
	ended := done + failed + unknown + unreached
	if p.total > 0 {
		const width = 30
		n := int(float64(width) * float64(ended) / float64(p.total))
		bar := "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] "
		fmt.Fprintf(p.w, "\r%s%d/%d %s, %s, %.0f/s ", bar, ended, p.total, p.what, counts, rate)
		return
	}
	fmt.Fprintf(p.w, "\r%d %s, %s, %.0f/s ", ended, p.what, counts, rate)
}

func (p *progress) end() {
	close(p.stop)
	<-p.finished
}

// submitFrom submits one request per line of file ("-": standard input),
// pipelined on one client connection with up to parallel submits in
// flight (Client.SubmitAsync), and prints "ticket<TAB>line number" for each in
// input order as they are acknowledged, with a progress bar and a summary
// on standard error. Each line gets an idempotency key made of keyPrefix
// and its line number when keyPrefix is set, so a rerun after an
// interruption returns the same tickets instead of making new ones.
func submitFrom(e env, cf clientFlags, service, file string, base client.SubmitOptions, parallel int) error {
	keyPrefix := base.IdemKey
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	parallel = max(parallel, 1)
	c, err := cf.dial(e, func(cfg *client.Config) { cfg.MaxPending = parallel })
	if err != nil {
		return err
	}
	defer c.Close()
	pr := startProgress(e.stderr, "submitted", len(lines))
	// The submitter hands the futures over in input order; this goroutine
	// prints them in that order as they end.
	type started struct {
		fut *client.SubmitFuture
		err error
	}
	futs := make(chan started, parallel)
	go func() {
		defer close(futs)
		for i, line := range lines {
			opt := base
			opt.IdemKey = ""
			if keyPrefix != "" {
				opt.IdemKey = fmt.Sprintf("%s:%d", keyPrefix, i+1)
			}
			f, err := c.SubmitAsync(e.ctx, service, [][]byte{[]byte(line)}, opt)
			futs <- started{f, err}
		}
	}()
	failed := 0
	var first error
	line := 0
	for s := range futs {
		line++
		tk, err := "", s.err
		if err == nil {
			tk, err = s.fut.Ticket(e.ctx)
		}
		if err != nil {
			failed++
			pr.failed.Add(1)
			if first == nil {
				first = fmt.Errorf("line %d: %w", line, err)
			}
			continue
		}
		pr.done.Add(1)
		fmt.Fprintf(e.stdout, "%s\t%d\n", tk, line)
	}
	pr.end()
	el := time.Since(pr.start)
	fmt.Fprintf(e.stderr, "%d submitted, %d failed, in %s (%.0f/s)\n", len(lines)-failed, failed, el.Round(time.Millisecond), float64(len(lines)-failed)/max(el.Seconds(), 1e-9))
	if failed > 0 {
		return fmt.Errorf("%d of %d submits failed; first: %w", failed, len(lines), first)
	}
	return nil
}

// runWait waits for tickets (arguments, or "-": one per line on standard
// input) and prints "ticket<TAB>state" for each as it finishes.
func runWait(e env) error {
	fs := newFlags(e, "wait", "[flags] TICKET... | -")
	cf := addWaitFlags(fs)
	parallel := fs.Int("parallel", 8, "tickets waited for at once")
	asJSON := addJSONFlag(fs)
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	tickets := fs.Args()
	if len(tickets) == 1 && tickets[0] == "-" {
		tickets = nil
		sc := bufio.NewScanner(e.stdin)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 {
				tickets = append(tickets, f[0])
			}
		}
	}
	if len(tickets) == 0 {
		return usagef("want at least one TICKET (or - to read them from standard input)")
	}
	ctx, cancel := cf.waitContext(e)
	defer cancel()
	pr := startProgress(e.stderr, "answered", len(tickets))
	var mu sync.Mutex
	var failed, unknown, pending, unreached int
	var firstUnreached error
	var wg sync.WaitGroup
	work := make(chan string)
	for i := range max(*parallel, 1) {
		var tune []func(*client.Config)
		if i == 0 {
			tune = append(tune, identify("wait")) // one presence per command
		}
		c, err := cf.dial(e, tune...)
		if err != nil {
			close(work)
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for tk := range work {
				_, err := c.Wait(ctx, tk, client.WaitOptions{})
				state := "done"
				switch {
				case err != nil && e.ctx.Err() != nil:
					// Interrupted: the ticket did not fail, and nothing
					// was done to it.
					continue
				case err != nil && cf.waitExpired(e, ctx):
					state = "pending"
				case err == nil:
					pr.done.Add(1)
				case errors.Is(err, client.ErrFailed):
					state = "failed"
					pr.failed.Add(1)
				case errors.Is(err, client.ErrUnknown):
					state = "unknown"
					pr.unknown.Add(1)
				case errors.Is(err, client.ErrUnavailable):
					// The broker is down, not the ticket: it may well be
					// done, and a resubmit would duplicate it.
					state = "error: " + err.Error()
					pr.unreached.Add(1)
				default:
					state = "error: " + err.Error()
					pr.failed.Add(1)
				}
				mu.Lock()
				switch {
				case state == "done":
				case state == "pending":
					pending++
				case state == "unknown":
					unknown++
				case errors.Is(err, client.ErrUnavailable):
					unreached++
					if firstUnreached == nil {
						firstUnreached = err
					}
				default:
					failed++
				}
				printWaited(e, *asJSON, tk, state)
				mu.Unlock()
			}
		}()
	}
	handed := 0
feed:
	for _, tk := range tickets {
		select {
		case work <- tk:
			handed++
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	pr.end()
	if err := e.ctx.Err(); err != nil {
		return err // interrupted: exit 130, whatever was seen so far
	}
	if cf.waitExpired(e, ctx) {
		// Those never handed to a waiter are not answered either, and a
		// script reading the output must see every one still pending.
		for _, tk := range tickets[handed:] {
			printWaited(e, *asJSON, tk, "pending")
		}
		pending += len(tickets) - handed
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%w: %d of %d tickets failed", client.ErrFailed, failed, len(tickets))
	case unknown > 0:
		return fmt.Errorf("%w: %d of %d tickets unknown", client.ErrUnknown, unknown, len(tickets))
	case unreached > 0:
		return fmt.Errorf("%d of %d tickets not known to be answered or failed, they are left as they were: %w", unreached, len(tickets), firstUnreached)
	case pending > 0:
		return fmt.Errorf("%w: %d of %d tickets not answered within --wait-timeout %s; they stay queued", client.ErrPending, pending, len(tickets), *cf.waitTimeout)
	}
	return nil
}

// printWaited prints the line of one ticket that wait has an answer for:
// "ticket<TAB>state", or with asJSON one object.
func printWaited(e env, asJSON bool, ticket, state string) {
	if !asJSON {
		fmt.Fprintf(e.stdout, "%s\t%s\n", ticket, state)
		return
	}
	st, msg, _ := strings.Cut(state, ": ")
	_ = printJSON(e.stdout, struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Error string `json:"error,omitempty"`
	}{ticket, st, msg})
}
