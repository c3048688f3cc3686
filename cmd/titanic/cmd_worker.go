package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/titanicmq/titanic/cmd/titanic/config"
	"github.com/titanicmq/titanic/titanic/tsp"
	"github.com/titanicmq/titanic/worker"
)

// stderrTail is how much of a failed command's stderr is reported.
const stderrTail = 512

func runWorker(e env) error {
	fs := newFlags(e, "worker", "[flags] SERVICE -- CMD [ARGS...]\n\n"+
		"  Runs CMD once per request: the request body on stdin, stdout is the reply; a non-zero\n"+
		"  exit or --timeout is a failed attempt. --concurrency N runs up to N at once: N workers\n"+
		"  of SERVICE on the wire (7/MDP gives a worker one request at a time), each with its own\n"+
		"  connection, heartbeats and reconnects (logs name the slot). SIGINT/SIGTERM: take no new\n"+
		"  request, let the running CMDs finish (up to --drain-timeout), send their replies, exit; Ctrl-C again kills them and exits at once.")
	brokers := fs.String("broker", "", brokerHelp)
	timeout := fs.Duration("timeout", 5*time.Minute, "kill CMD and report a failed attempt after this long, per request (0: no limit)")
	concurrency := fs.Int("concurrency", 1, fmt.Sprintf("requests handled at once, each by its own CMD and its own worker connection (1 to %d)", worker.MaxConcurrency))
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long running CMDs may go on before they are killed (their requests are then redelivered); 0: kill at once")
	maxOutput := config.Default().Limits.MaxMessageSize
	fs.TextVar(&maxOutput, "max-output", maxOutput, "largest reply taken from CMD's standard output (a size: 32MiB); more fails the attempt, "+
		"as the broker would drop it over its limits.max_message_size (raise both together); -1: no limit")
	hb := fs.Duration("heartbeat", worker.DefaultHeartbeatInterval, "MDP heartbeat interval: give the broker's --heartbeat (a broker expecting heartbeats more often drops the worker as silent)")
	liveness := fs.Int("liveness", worker.DefaultLiveness, "heartbeats the broker may miss before the worker gives up its connection and reconnects (--heartbeat x --liveness of silence)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	serverKey := fs.String("curve-server-key", "", "CURVE: the broker's public key file (with --curve-key)")
	ownKey := fs.String("curve-key", "", "CURVE: this worker's key file, made by titanic keygen")
	if err := e.parseFlags(fs, e.args); err != nil {
		var ue usageError
		if errors.As(err, &ue) && !slices.Contains(e.args, "--") {
			return usagef("%v (the command goes after --: titanic worker [flags] SERVICE -- CMD [ARGS...])", err)
		}
		return err
	}
	args := fs.Args()
	if len(args) < 2 {
		return usagef("want SERVICE -- CMD [ARGS...]")
	}
	service, cmdline := args[0], args[1:]
	if *concurrency < 1 || *concurrency > worker.MaxConcurrency {
		return usagef("--concurrency %d: want 1 to %d", *concurrency, worker.MaxConcurrency)
	}
	if maxOutput == 0 || maxOutput < config.Unlimited {
		return usagef("--max-output %s: want a positive size, or -1 for no limit", maxOutput)
	}
	if *drain < 0 {
		return usagef("--drain-timeout %s: must not be negative", *drain)
	}
	if *liveness < 1 {
		return usagef("--liveness %d: want at least 1", *liveness)
	}
	if strings.HasPrefix(service, "mmi.") || strings.HasPrefix(service, tsp.Prefix) {
		// A titanic broker answers these itself and refuses the READY:
		// the worker would reconnect for ever.
		return fmt.Errorf("service %q: the \"mmi.\" and %q services are reserved", service, tsp.Prefix)
	}
	brokerEPs := brokerList(e, *brokers)
	if err := checkBrokers(brokerEPs); err != nil {
		return err
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	// A command that cannot be run would fail every request, each
	// attempt a redelivery: say so now.
	if _, err := exec.LookPath(cmdline[0]); err != nil {
		return fmt.Errorf("command %q: %w", cmdline[0], unwrapExec(err))
	}
	log, err := newLogger(e, *logLevel, "text")
	if err != nil {
		return err
	}
	// now ends the running commands at once: a SIGINT (Ctrl-C) while
	// draining, for an operator who will not wait --drain-timeout.
	now, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	var running sync.WaitGroup
	h := func(ctx context.Context, req [][]byte) ([][]byte, error) {
		running.Add(1)
		cmdCtx, cancel := context.WithCancel(ctx)
		unhook := context.AfterFunc(now, cancel)
		rep, err := runCommand(cmdCtx, *timeout, int64(maxOutput), cmdline, bytes.Join(req, nil))
		unhook()
		cancel()
		running.Done()
		if now.Err() != nil {
			// Killed to stop at once: no FAIL for the request, which is
			// redelivered as after --drain-timeout. The result is dropped
			// once the worker gives up on the handler (or the process
			// ends first).
			<-ctx.Done()
		}
		return rep, err
	}
	cc, err := clientCurve(*serverKey, *ownKey)
	if err != nil {
		return err
	}
	w, err := worker.New(worker.Config{
		Brokers: brokerEPs, Service: service, HeartbeatInterval: *hb, Liveness: *liveness,
		Concurrency: *concurrency, DrainTimeout: *drain, Logger: log, Curve: cc,
	}, h)
	if err != nil {
		return err
	}
	log.Info("worker running", "service", service, "command", cmdline, "concurrency", *concurrency)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(e.ctx) }()
	for signals := 0; ; {
		select {
		case err := <-ran:
			return err
		case sig := <-sigs:
			// The first is e.ctx's too: Run drains. A SIGTERM again (a
			// supervisor repeating itself) leaves the drain be; Ctrl-C
			// again is a person who will not wait.
			if signals++; signals < 2 || sig != os.Interrupt {
				continue
			}
		}
		log.Warn("second interrupt: stopping at once; the running commands are killed and their requests redelivered")
		stopNow()
		running.Wait()
		return errors.New("stopped at once by a second interrupt")
	}
}

// runCommand runs cmdline once with stdin as its standard input; its
// standard output, up to maxOutput bytes (negative: no limit), is the
// reply. A non-zero exit, a timeout or more output is an error carrying
// the tail of its standard error.
func runCommand(ctx context.Context, timeout time.Duration, maxOutput int64, cmdline []string, stdin []byte) ([][]byte, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ctx, kill := context.WithCancelCause(ctx)
	defer kill(nil)
	cmd := exec.CommandContext(ctx, cmdline[0], cmdline[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	stdout := &cappedBuffer{max: maxOutput, over: func() {
		kill(fmt.Errorf("standard output over --max-output %s, the largest reply taken; the command was killed", config.Size(maxOutput)))
	}}
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	ownGroup(cmd)
	err := cmd.Run()
	_ = killGroup(cmd) // what it left running in the background
	if cause := context.Cause(ctx); stdout.overflowed && cause != nil {
		err = cause
	} else if err == nil || errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// Exited 0; a process it left behind held its output open past
		// WaitDelay, and the output read by then is the reply.
		return [][]byte{stdout.buf.Bytes()}, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	tail := bytes.TrimSpace(stderr.bytes())
	if len(tail) == 0 {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s", err, tail)
}

// cappedBuffer keeps a command's standard output up to max bytes
// (negative: no limit). Past it, it calls over once and discards the rest:
// it keeps reading, so that the command is not left blocked on a full
// pipe until it is killed.
type cappedBuffer struct {
	buf        bytes.Buffer
	max        int64
	over       func()
	overflowed bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.overflowed {
		return len(p), nil
	}
	if c.max >= 0 && int64(c.buf.Len())+int64(len(p)) > c.max {
		c.overflowed = true
		c.buf = bytes.Buffer{} // not a reply any more: free it now
		c.over()
		return len(p), nil
	}
	return c.buf.Write(p)
}

// tailBuffer keeps the last max bytes written to it: a command's stderr
// is reported by its tail only, and a verbose one must not grow the
// worker by all it writes.
type tailBuffer struct {
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		// Amortised: trim once the buffer holds twice the tail.
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return n, nil
}

// bytes returns the tail: the last max bytes written.
func (t *tailBuffer) bytes() []byte {
	return t.buf[max(0, len(t.buf)-t.max):]
}

// unwrapExec drops the repetitions of the command's name in LookPath's
// error ("exec: "x": executable file not found in $PATH", "exec: "/x":
// stat /x: no such file or directory"), for a message that names it once.
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return err
}
