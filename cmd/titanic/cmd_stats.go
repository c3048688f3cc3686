package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/titanicmq/titanic/client"
)

// runStats prints every service's queue once (titanic.stats).
func runStats(e env) error {
	fs := newFlags(e, "stats", "[flags]")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "only this service")
	asJSON := fs.Bool("json", false, "print the broker's answer as JSON (the HTTP API's /api/v1/queues)")
	c, err := dialNoArgs(e, fs, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.QueueStats(e.ctx, *service)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printQueues(e.stdout, st)
}

// runTop prints the table of stats every interval until interrupted: over
// again in place on a terminal, one table after another otherwise (a pipe,
// a file), without a curses library.
func runTop(e env) error {
	fs := newFlags(e, "top", "[flags]   (Ctrl-C to quit)")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "only this service")
	interval := fs.Duration("interval", time.Second, "time between refreshes")
	if err := parseNoArgs(e, fs); err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval must be positive")
	}
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	tty := isTerminal(e.stdout)
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		st, err := c.QueueStats(e.ctx, *service)
		switch {
		case e.ctx.Err() != nil:
			return e.ctx.Err()
		case errors.Is(err, client.ErrRejected):
			return err // a broker without titanic.stats: asking again will not help
		case err != nil:
			// A broker down or failing over: say so and keep asking, as
			// top does while the system is busy.
			fmt.Fprintf(e.stderr, "titanic top: %s\n", shownErr(err))
		default:
			if tty {
				fmt.Fprint(e.stdout, "\x1b[H\x1b[2J") // home, clear screen
			}
			fmt.Fprintf(e.stdout, "titanic top  %s  every %s, rates over %gs  (Ctrl-C to quit)\n",
				st.Time.Local().Format("15:04:05"), *interval, st.WindowSeconds)
			if err := printQueues(e.stdout, st); err != nil {
				return err
			}
			if !tty {
				fmt.Fprintln(e.stdout)
			}
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-t.C:
		}
	}
}

// queueHeader is the table's first line; the CLI tests read the columns by
// these names.
var queueHeader = []string{"SERVICE", "PENDING", "DELAYED", "IN-FLIGHT", "DONE", "FAILED", "WORKERS", "IDLE", "BUSY", "SUBMIT/S", "REPLY/S", "PAUSED"}

// printQueues prints one line per service; idle and busy are "-" when the
// broker does not know them. PAUSED is yes or no, so that every line has
// every column for awk.
func printQueues(w io.Writer, st client.QueueStats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, h := range queueHeader {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, h)
	}
	fmt.Fprintln(tw)
	opt := func(p *int) string {
		if p == nil {
			return "-"
		}
		return strconv.Itoa(*p)
	}
	for _, q := range st.Services {
		paused := "no"
		if q.Paused {
			paused = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%.1f\t%.1f\t%s\n", shown(q.Service), q.Pending, q.Delayed, q.InFlight,
			q.Done, q.Failed, q.Workers, opt(q.Idle), opt(q.Busy), q.SubmitRate, q.ReplyRate, paused)
	}
	return tw.Flush()
}
