package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/cmd/titanic/config"
)

// progress prints a one-line progress report on w every interval (and at
// the end), overwriting itself with a carriage return, when w is a
// terminal; else (a log file, a CI's captured output) only the final
// report, for a line a reader can read and not hundreds joined by "\r".
type progress struct {
	w       io.Writer
	tty     bool
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
	p := &progress{w: w, tty: isTerminal(w), what: what, total: total, start: time.Now(), stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(p.finished)
		var tick <-chan time.Time // none: only the final report
		if p.tty {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-p.stop:
				p.print()
				fmt.Fprintln(p.w)
				return
			case <-tick:
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
	cr := ""
	if p.tty {
		cr = "\r"
	}
	// The bar and its count are the tickets (or lines) that ended, however
	// they ended; what names only those that succeeded, beside the
	// failed and unknown ones.
	if p.total > 0 {
		const width = 30
		n := int(float64(width) * float64(ended) / float64(p.total))
		bar := "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] "
		fmt.Fprintf(p.w, "%s%s%d/%d ended, %d %s, %s, %.0f/s ", cr, bar, ended, p.total, done, p.what, counts, rate)
		return
	}
	fmt.Fprintf(p.w, "%s%d %s, %s, %.0f/s ", cr, done, p.what, counts, rate)
}

func (p *progress) end() {
	close(p.stop)
	<-p.finished
}

// maxLine is the longest line submitFrom takes as a request; a longer one
// fails alone, named by its number.
const maxLine = 16 << 20

// submitFrom submits one request per line of file ("-": standard input),
// pipelined on one client connection with up to parallel submits in
// flight (Client.SubmitAsync), and prints "ticket<TAB>line number" for each in
// input order as they are acknowledged, with a progress report and a summary
// on standard error. Lines are submitted as they are read, so that a
// producer that runs on (tail -f ... | titanic submit --from -) is served
// as it writes, and memory does not grow with the input. Each line gets
// an idempotency key made of keyPrefix and its line number when keyPrefix
// is set, so a rerun after an interruption returns the same tickets
// instead of making new ones.
func submitFrom(e env, cf clientFlags, service, file string, base client.SubmitOptions, parallel int) error {
	keyPrefix := base.IdemKey
	var r io.Reader = e.stdin
	total := 0 // unknown: a count instead of a bar
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		if total, err = countLines(f); err != nil {
			return fmt.Errorf("read %s: %w", file, err)
		}
		r = f
	}
	parallel = max(parallel, 1)
	c, err := cf.dial(e, func(cfg *client.Config) { cfg.MaxPending = parallel })
	if err != nil {
		return err
	}
	defer c.Close()
	pr := startProgress(e.stderr, "submitted", total)
	// The submitter hands the futures over in input order, one per line
	// (err alone for a line it could not submit; readErr, last, when the
	// input could not be read); this goroutine prints them in that order
	// as they end.
	type started struct {
		fut     *client.SubmitFuture
		err     error
		readErr error
	}
	futs := make(chan started, parallel)
	go func() {
		defer close(futs)
		send := func(s started) bool {
			select {
			case futs <- s:
				return true
			case <-e.ctx.Done(): // the printer is gone
				return false
			}
		}
		lr := bufio.NewReaderSize(r, 64<<10)
		for n := 1; ; n++ {
			line, err := readLine(lr, maxLine)
			var s started
			switch {
			case errors.Is(err, io.EOF):
				return
			case errors.Is(err, errLineTooLong):
				s.err = err
			case err != nil:
				send(started{readErr: fmt.Errorf("read %s: %w", file, err)})
				return
			default:
				opt := base
				opt.IdemKey = ""
				if keyPrefix != "" {
					opt.IdemKey = fmt.Sprintf("%s:%d", keyPrefix, n)
				}
				s.fut, s.err = c.SubmitAsync(e.ctx, service, [][]byte{line}, opt)
			}
			if !send(s) {
				return
			}
		}
	}()
	failed, lines := 0, 0
	var first error
	for {
		var s started
		var ok bool
		select {
		case s, ok = <-futs:
		case <-e.ctx.Done():
			// The submitter may be blocked reading the input.
			pr.end()
			return e.ctx.Err()
		}
		if !ok {
			break
		}
		if s.readErr != nil {
			pr.end()
			return fmt.Errorf("%w (after %d lines, %d submitted)", s.readErr, lines, lines-failed)
		}
		lines++
		tk, err := "", s.err
		if err == nil {
			tk, err = s.fut.Ticket(e.ctx)
		}
		if err != nil {
			failed++
			pr.failed.Add(1)
			if first == nil {
				first = fmt.Errorf("line %d: %w", lines, err)
			}
			continue
		}
		pr.done.Add(1)
		fmt.Fprintf(e.stdout, "%s\t%d\n", tk, lines)
	}
	pr.end()
	el := time.Since(pr.start)
	fmt.Fprintf(e.stderr, "%d submitted, %d failed, in %s (%.0f/s)\n", lines-failed, failed, el.Round(time.Millisecond), float64(lines-failed)/max(el.Seconds(), 1e-9))
	if failed > 0 {
		return fmt.Errorf("%d of %d submits failed; first: %w", failed, lines, first)
	}
	return nil
}

// errLineTooLong is readLine's error for a line over its limit.
var errLineTooLong = errors.New("line too long")

// readLine reads the next line of r without its end ("\n" or "\r\n", as
// bufio.ScanLines); a last line without "\n" counts. A line of more than
// maxLen bytes is read to its end and dropped: errLineTooLong, and the
// next call reads the line after it. io.EOF: no line is left.
func readLine(r *bufio.Reader, maxLen int) ([]byte, error) {
	var line []byte
	n := 0
	for {
		frag, err := r.ReadSlice('\n')
		n += len(frag)
		if n <= maxLen+2 { // room for "\r\n"
			line = append(line, frag...)
		} else {
			line = nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if n == 0 {
			return nil, io.EOF
		}
		break
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if n > maxLen+2 || len(line) > maxLen {
		return nil, fmt.Errorf("%w: over %d bytes (%s)", errLineTooLong, maxLen, config.Size(maxLen))
	}
	return line, nil
}

// countLines counts the lines of a regular file, for the progress bar, and
// rewinds it; of anything else (a pipe, a terminal) it reads nothing and
// returns 0, unknown.
func countLines(f *os.File) (int, error) {
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 0, nil
	}
	br := bufio.NewReaderSize(f, 64<<10)
	n, last := 0, byte('\n')
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			last = chunk[len(chunk)-1]
			if last == '\n' {
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, err
		}
	}
	if last != '\n' {
		n++ // a last line without "\n"
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return n, nil
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
		if err := e.goAhead(); err != nil {
			return err
		}
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
	if err := e.goAhead(); err != nil {
		return err
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
				_, err := waitThrough(e, ctx, c, tk)
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
		fmt.Fprintf(e.stdout, "%s\t%s\n", shown(ticket), shown(state))
		return
	}
	st, msg, _ := strings.Cut(state, ": ")
	_ = printJSON(e.stdout, struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Error string `json:"error,omitempty"`
	}{ticket, st, msg})
}
