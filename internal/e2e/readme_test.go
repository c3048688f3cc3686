package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestReadme reads README.md through the built binary, so that README cannot
// drift from it: a command or flag it shows that the binary lacks, or an
// example that fails, fails the test naming the README line.
//
// What is read:
//
//   - Every line of a ```sh block (a line ending in \ joined with the
//     next), and every line of another fenced block that starts with
//     `titanic ` or `bin/titanic `.
//   - A line whose first word is titanic or bin/titanic runs the built
//     binary. NAME=VALUE sets a shell variable, expanded later ($P, $B);
//     NAME=$(titanic ... | jq -r .FIELD) runs the command and sets NAME to
//     that field of its JSON output. Every other line (make, curl, cp, kill,
//     jq, export, go, ...) is not titanic and is skipped (logged). The test
//     reads a small shell: quotes, $VAR and "$VAR", pipes into jq, # comments;
//     anything else on a titanic line (;, &&, >, backquotes) fails the test,
//     to be taught here first.
//
// Substitutions (the words of a titanic line, after expansion):
//
//   - TICKET, and $t set from a submit, are a real ticket: the one the last
//     example submit printed, or a fresh `titanic submit upper hello`.
//   - The client's broker list: lines without --broker go to the test's
//     broker through $TITANIC_BROKERS. In endpoints of the pair, group and
//     peering examples, tcp://10.0.0.1:5555 and tcp://10.0.1.1:5555 (the
//     first node) are the test's broker; every other tcp://10.x.x.x:PORT is
//     a local port where nothing listens (a node that is down).
//   - /var/lib/titanic/backups/nightly.db is a backup the test made of its
//     broker (titanic backup); /var/lib/titanic, /etc/titanic and
//     ~/.titanic are empty temporary directories. A lone ... (the rest of a
//     command line, as before) is dropped. A worker's command that is the
//     example's own script (./resize.sh) is cat: a worker refuses at
//     start a command it cannot run.
//
// What runs, against one real broker the test starts on 127.0.0.1:
//
//   - Client commands run and must exit 0, within 30 s. A comment "prints
//     a ticket" checks for one, "prints WORD" (upper case) for WORD; a pipe
//     into jq -r .FIELD checks that the output is JSON holding FIELD.
//   - Long-running commands: worker is started and must log "worker
//     running", and exit 0 on SIGTERM at the end; top must print its table,
//     then exit 130 on SIGINT.
//   - Parsed only (TITANIC_PARSE_ONLY=1: the command, its flags and their
//     values; the broker's resolved configuration; nothing dialed or
//     written), because they need what the test does not start: every
//     broker line (the test's own broker stands in for the single node; the
//     pair, group, peering and CURVE ones need their hosts), cluster join
//     and leave (a raft group), and lines with --curve-key or
//     --curve-server-key (a CURVE broker).
//
// Besides the examples, every flag in a code span is checked against the
// flags the binary's command lists in --help: a span that starts with a
// command (`titanic reply --wait`, `status --body`, `titanic
// status\|reply\|close --broker EP`) against that command; a span that is
// only flags (`--timeout`) in a row of a `| command | ... |` table against
// the row's commands (one of them must have it); the Flag column of the
// configuration reference against broker; and any other span that starts
// with a flag against every command (some command must have it). A span
// that starts with another word (`git clone --depth`) is not titanic's.
func TestReadme(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bin := harness.Binary(t)
	t.Run("flags", func(t *testing.T) { readmeFlags(t, bin, string(src)) })
	t.Run("examples", func(t *testing.T) { readmeExamples(t, bin, string(src)) })
}

// readmeLine is a line of README.md that may run titanic.
type readmeLine struct {
	n    int    // line number in README.md, 1-based
	text string // continuation lines joined
}

func (l readmeLine) String() string { return fmt.Sprintf("README.md:%d: `%s`", l.n, l.text) }

var fence = regexp.MustCompile("^\\s*```")

// readmeShellLines returns the lines of README.md's fenced blocks the test
// reads (see TestReadme).
func readmeShellLines(src string) []readmeLine {
	var out []readmeLine
	in, sh := false, false
	var cont *readmeLine
	for i, line := range strings.Split(src, "\n") {
		if fence.MatchString(line) {
			if in {
				in, cont = false, nil
				continue
			}
			in = true
			sh = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "`")) == "sh"
			continue
		}
		if !in {
			continue
		}
		if cont != nil {
			cont.text += " " + strings.TrimSpace(strings.TrimSuffix(line, "\\"))
			if !strings.HasSuffix(line, "\\") {
				out = append(out, *cont)
				cont = nil
			}
			continue
		}
		text := strings.TrimSpace(line)
		if !sh && !strings.HasPrefix(text, "titanic ") && !strings.HasPrefix(text, "bin/titanic ") {
			continue
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if strings.HasSuffix(text, "\\") {
			cont = &readmeLine{n: i + 1, text: strings.TrimSpace(strings.TrimSuffix(text, "\\"))}
			continue
		}
		out = append(out, readmeLine{n: i + 1, text: text})
	}
	return out
}

// shellCmd is a titanic line read by the test's small shell.
type shellCmd struct {
	assign  string     // NAME of NAME=$(...), or ""
	words   []string   // the titanic command, expanded
	pipes   [][]string // the commands it is piped into
	comment string     // the trailing comment, without #
}

var (
	plainAssign = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$`)
	subAssign   = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$`)
	varName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)
)

// splitShell splits a command line into words: '...' and "..." quote,
// $VAR and "$VAR" expand from vars (an unknown one is an error), | separates
// commands, a word starting with # starts the comment. Other shell syntax
// is an error.
func splitShell(line string, vars map[string]string) (cmds [][]string, comment string, err error) {
	var words []string
	var w strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	expand := func(rest string) (int, error) {
		name := varName.FindString(rest)
		if name == "" {
			return 0, fmt.Errorf("a $ the test cannot read")
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not set by an earlier line", name)
		}
		w.WriteString(v)
		return len(name), nil
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !inWord:
			flush()
			return append(cmds, words), strings.TrimSpace(line[i+1:]), nil
		case c == '|':
			flush()
			cmds, words = append(cmds, words), nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, "", fmt.Errorf("unterminated '")
			}
			w.WriteString(line[i+1 : i+1+j])
			inWord, i = true, i+1+j
		case c == '"':
			inWord = true
			for i++; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '$' {
					n, err := expand(line[i+1:])
					if err != nil {
						return nil, "", err
					}
					i += n
					continue
				}
				w.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, "", fmt.Errorf("unterminated \"")
			}
		case c == '$':
			n, err := expand(line[i+1:])
			if err != nil {
				return nil, "", err
			}
			inWord, i = true, i+n
		case strings.IndexByte(";&<>`()\\{}", c) >= 0:
			return nil, "", fmt.Errorf("shell syntax %q the test does not read", c)
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return append(cmds, words), "", nil
}

// readShell reads a line: a plain assignment sets vars and returns nil; a
// titanic line returns its command; any other line returns nil, false.
func readShell(text string, vars map[string]string) (cmd *shellCmd, titanic bool, err error) {
	code, comment := text, ""
	if i := strings.Index(text, " #"); i >= 0 {
		code, comment = strings.TrimSpace(text[:i]), strings.TrimSpace(text[i+2:])
	}
	if m := plainAssign.FindStringSubmatch(code); m != nil && !strings.Contains(code, "$(") {
		words, _, err := splitShell(m[2], vars)
		if err != nil || len(words) != 1 || len(words[0]) != 1 {
			return nil, false, fmt.Errorf("assignment the test cannot read: %v", err)
		}
		vars[m[1]] = words[0][0]
		return nil, false, nil
	}
	assign := ""
	if m := subAssign.FindStringSubmatch(code); m != nil {
		assign, code = m[1], m[2]
	}
	if f := strings.Fields(code); len(f) == 0 || (f[0] != "titanic" && f[0] != "bin/titanic") {
		if assign != "" {
			return nil, false, fmt.Errorf("$(...) of a command that is not titanic")
		}
		return nil, false, nil
	}
	cmds, _, err := splitShell(code, vars)
	if err != nil {
		return nil, true, err
	}
	for _, p := range cmds[1:] {
		if len(p) != 3 || p[0] != "jq" || p[1] != "-r" || !strings.HasPrefix(p[2], ".") {
			return nil, true, fmt.Errorf("a pipe into %q: the test reads only | jq -r .FIELD", strings.Join(p, " "))
		}
	}
	return &shellCmd{assign: assign, words: cmds[0][1:], pipes: cmds[1:], comment: comment}, true, nil
}

// readmeRun is the state of the examples' run: the test's broker and what
// earlier lines left.
type readmeRun struct {
	t       *testing.T
	bin     string
	ep      string            // the test's broker
	vars    map[string]string // shell variables set by earlier lines
	ticket  string            // the last ticket an example printed
	paths   *strings.Replacer // the documented path substitutions
	dead    map[string]string // endpoints of other hosts → local ports where nothing listens
	workers []*harness.Process
}

var (
	ticketRE   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	exampleEP  = regexp.MustCompile(`tcp://10\.\d+\.\d+\.\d+:\d+`)
	printsWord = regexp.MustCompile(`(?:^|\s)prints ([A-Z]+)$`)
)

func readmeExamples(t *testing.T, bin, src string) {
	ep := harness.FreeEndpoint(t)
	data := t.TempDir()
	// The defaults: README's workers heartbeat at the default interval.
	br := harness.Broker(t, "broker", ep, data)
	t.Setenv("TITANIC_BROKERS", ep)
	t.Setenv(parseOnlyVar, "")
	r := &readmeRun{t: t, bin: bin, ep: ep, vars: map[string]string{}, dead: map[string]string{}}
	// The backup the restore example restores.
	if out, stderr, code := r.exec(nil, "backup", "nightly.db"); code != 0 {
		t.Fatalf("titanic backup nightly.db: exit %d, %s%s\nbroker log:\n%s", code, out, stderr, br.Tail())
	}
	home, etc, varlib := t.TempDir(), t.TempDir(), t.TempDir()
	r.paths = strings.NewReplacer(
		"/var/lib/titanic/backups/nightly.db", filepath.Join(data, "backups", "nightly.db"),
		"/var/lib/titanic", varlib,
		"/etc/titanic", etc,
		"~/.titanic", home,
	)
	lines := readmeShellLines(src)
	if len(lines) < 20 {
		t.Fatalf("found %d shell lines in README.md: the reader of its fenced blocks is broken", len(lines))
	}
	ran := 0
	for _, l := range lines {
		cmd, titanic, err := readShell(l.text, r.vars)
		switch {
		case err != nil:
			t.Errorf("%s: %v", l, err)
			continue
		case !titanic:
			t.Logf("%s: not titanic, skipped", l)
			continue
		case cmd == nil:
			continue
		}
		if r.line(l, cmd) {
			ran++
		}
	}
	if t.Failed() {
		t.Logf("broker log:\n%s", br.Tail())
	}
	if ran < 15 {
		t.Errorf("ran %d README examples against the broker, want at least 15: the test lost track of README", ran)
	}
	for _, w := range r.workers {
		if err := w.Stop(15 * time.Second); err != nil {
			t.Errorf("a README worker on SIGTERM: %v, want exit 0\n%s", err, w.Tail())
		}
	}
}

// parseOnlyVar is cmd/titanic's parseOnlyEnv.
const parseOnlyVar = "TITANIC_PARSE_ONLY"

// exec runs the binary with args (and extra environment), with a bounded
// wait, and returns its output and exit code.
func (r *readmeRun) exec(extraEnv []string, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, r.bin, args...)
	c.Env = append(os.Environ(), extraEnv...)
	var out, errb bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = strings.NewReader(""), &out, &errb
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return out.String(), errb.String() + "\n(killed: not done within 30s)", -1
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		r.t.Fatalf("run titanic %q: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// substitute applies the documented substitutions to a line's words.
func (r *readmeRun) substitute(words []string) []string {
	var out []string
	for _, w := range words {
		switch {
		case w == "...":
			continue
		case w == "TICKET":
			w = r.currentTicket()
		}
		w = r.paths.Replace(w)
		w = exampleEP.ReplaceAllStringFunc(w, func(ep string) string {
			if ep == "tcp://10.0.0.1:5555" || ep == "tcp://10.0.1.1:5555" {
				return r.ep
			}
			if _, ok := r.dead[ep]; !ok {
				r.dead[ep] = harness.FreeEndpoint(r.t)
			}
			return r.dead[ep]
		})
		out = append(out, w)
	}
	return out
}

// currentTicket is the last ticket an example printed, else a fresh one.
func (r *readmeRun) currentTicket() string {
	if r.ticket == "" {
		out, stderr, code := r.exec(nil, "submit", "upper", "hello")
		if code != 0 || !ticketRE.MatchString(strings.TrimSpace(out)) {
			r.t.Fatalf("titanic submit upper hello (a ticket for TICKET): %q exit %d %s", out, code, stderr)
		}
		r.ticket = strings.TrimSpace(out)
	}
	return r.ticket
}

// parseOnly reports whether a line needs what the test does not start.
func parseOnly(words []string) bool {
	if len(words) == 0 {
		return false
	}
	if words[0] == "broker" {
		return true
	}
	if words[0] == "cluster" && slices.ContainsFunc(words, func(w string) bool { return w == "join" || w == "leave" || w == "forget-peer-split" }) {
		return true
	}
	return slices.ContainsFunc(words, func(w string) bool {
		return strings.HasPrefix(w, "--curve-key") || strings.HasPrefix(w, "--curve-server-key")
	})
}

// line runs (or parses) one titanic line; it reports whether it ran.
func (r *readmeRun) line(l readmeLine, cmd *shellCmd) bool {
	t := r.t
	if len(cmd.words) == 0 {
		t.Errorf("%s: titanic without a command", l)
		return false
	}
	words := r.substitute(cmd.words)
	if parseOnly(cmd.words) {
		_, stderr, code := r.exec([]string{parseOnlyVar + "=1"}, words...)
		if code != 0 || !strings.Contains(stderr, "command line ok") {
			t.Errorf("%s: parsed with %s=1 as %q: exit %d, want 0 (command line ok)\n%s", l, parseOnlyVar, words, code, shortStderr(stderr))
		}
		t.Logf("%s: parsed only", l)
		return false
	}
	switch words[0] {
	case "worker":
		if i := slices.Index(words, "--"); i >= 0 && i+1 < len(words) && strings.HasPrefix(words[i+1], "./") {
			// The example's own script is not here, and a worker
			// refuses a command it cannot run: cat stands in for it.
			words = append(words[:i+1:i+1], "cat")
		}
		w := harness.Start(t, fmt.Sprintf("readme-worker-L%d", l.n), "worker running", words...)
		r.workers = append(r.workers, w)
		t.Logf("%s: started, running", l)
		return true
	case "top":
		r.top(l, words)
		return true
	}
	out, stderr, code := r.exec(nil, words...)
	if code != 0 {
		t.Errorf("%s: ran as titanic %q: exit %d, want 0\nstdout: %s\nstderr: %s", l, words, code, out, shortStderr(stderr))
		return true
	}
	t.Logf("%s: exit 0", l)
	trimmed := strings.TrimSpace(out)
	switch {
	case strings.HasSuffix(cmd.comment, "prints a ticket"):
		if !ticketRE.MatchString(trimmed) {
			t.Errorf("%s: README says it prints a ticket; it printed %q", l, out)
		}
	case printsWord.MatchString(cmd.comment):
		if want := printsWord.FindStringSubmatch(cmd.comment)[1]; trimmed != want {
			t.Errorf("%s: README says it prints %s; it printed %q", l, want, out)
		}
	}
	switch {
	case words[0] == "submit" && ticketRE.MatchString(trimmed):
		r.ticket = trimmed
	case words[0] == "close":
		r.ticket = ""
	}
	for _, p := range cmd.pipes {
		field := strings.TrimPrefix(p[2], ".")
		var obj map[string]any
		if err := json.Unmarshal([]byte(strings.SplitN(trimmed, "\n", 2)[0]), &obj); err != nil {
			t.Errorf("%s: piped into jq, but the output is not a JSON object: %v\n%s", l, err, out)
			return true
		}
		v, ok := obj[field].(string)
		if !ok || v == "" {
			t.Errorf("%s: piped into jq -r .%s, but the JSON has no such text field: %s", l, field, out)
			return true
		}
		if cmd.assign != "" {
			r.vars[cmd.assign] = v
			if ticketRE.MatchString(v) {
				r.ticket = v
			}
		}
	}
	if words[0] == "keygen" {
		dir, name := keygenTarget(words)
		for _, f := range []string{name + ".key", name + ".pub"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("%s: exit 0, but %v", l, err)
			}
		}
	}
	if words[0] == "restore" {
		if dir := flagValue(words, "--data"); dir != "" {
			if _, err := os.Stat(filepath.Join(dir, "titanic.db")); err != nil {
				t.Errorf("%s: exit 0, but %v", l, err)
			}
		}
	}
	return true
}

// top starts `titanic top`, waits for its table and stops it with SIGINT
// (exit 130).
func (r *readmeRun) top(l readmeLine, words []string) {
	t := r.t
	c := exec.Command(r.bin, words...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	table := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if !seen && strings.HasPrefix(sc.Text(), "SERVICE ") {
				seen = true
				close(table)
			}
		}
		exited <- c.Wait()
	}()
	defer func() { _ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }()
	select {
	case <-table:
	case err := <-exited:
		t.Errorf("%s: exited (%v) before printing its table\n%s", l, err, stderr.String())
		return
	case <-time.After(15 * time.Second):
		t.Errorf("%s: no table within 15s\n%s", l, stderr.String())
		return
	}
	_ = c.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("%s: on SIGINT (Ctrl-C): %v, want exit 130\n%s", l, err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s: still running 15s after SIGINT", l)
	}
	t.Logf("%s: table printed, exit 130 on SIGINT", l)
}

// shortStderr leaves out the flag list a usage error prints between its
// first line and its last.
func shortStderr(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= 6 {
		return s
	}
	return strings.Join(slices.Concat(lines[:2], []string{"  ..."}, lines[len(lines)-2:]), "\n")
}

// flagValue is the value of --name VALUE or --name=VALUE in words.
func flagValue(words []string, name string) string {
	for i, w := range words {
		if v, ok := strings.CutPrefix(w, name+"="); ok {
			return v
		}
		if w == name && i+1 < len(words) {
			return words[i+1]
		}
	}
	return ""
}

// keygenTarget is where `titanic keygen [--dir DIR] NAME` writes.
func keygenTarget(words []string) (dir, name string) {
	dir = flagValue(words, "--dir")
	if dir == "" {
		dir = "."
	}
	return dir, words[len(words)-1]
}

// readmeFlags checks every flag README's code spans show (see TestReadme).
func readmeFlags(t *testing.T, bin, src string) {
	// Help of the binary: its commands, and each one's flags.
	out, code := exec.Command(bin, "help").Output()
	if code != nil {
		t.Fatalf("titanic help: %v", code)
	}
	flagsOf := map[string]map[string]bool{"help": {}}
	inCommands := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "commands:"):
			inCommands = true
		case inCommands && strings.HasPrefix(line, "  "):
			flagsOf[strings.Fields(line)[0]] = map[string]bool{}
		case inCommands && strings.TrimSpace(line) == "":
			inCommands = len(flagsOf) == 1
		}
	}
	if len(flagsOf) < 10 {
		t.Fatalf("titanic help lists %d commands: the test cannot read it\n%s", len(flagsOf)-1, out)
	}
	for name, flags := range flagsOf {
		if name == "help" {
			continue
		}
		flags["--help"] = true // every command's, from package flag
		var help bytes.Buffer
		c := exec.Command(bin, name, "--help")
		c.Stdout, c.Stderr = &help, &help
		if err := c.Run(); err != nil {
			t.Fatalf("titanic %s --help: %v\n%s", name, err, help.String())
		}
		for _, line := range strings.Split(help.String(), "\n") {
			if f, ok := strings.CutPrefix(line, "  -"); ok && f != "" && f[0] != ' ' && f[0] != '-' {
				flags["--"+strings.Fields(f)[0]] = true
			}
		}
	}
	anyHas := func(flag string) bool {
		for _, fl := range flagsOf {
			if fl[flag] {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, s := range readmeSpans(src) {
		words := strings.Fields(strings.ReplaceAll(s.text, `\|`, "|"))
		var cmds []string
		switch {
		case len(words) > 1 && words[0] == "titanic":
			cmds = strings.Split(words[1], "|")
			for _, c := range cmds {
				if _, ok := flagsOf[c]; !ok {
					t.Errorf("README.md:%d: `%s`: titanic has no command %q", s.line, s.text, c)
				}
			}
		case len(words) > 1 && flagsOf[words[0]] != nil && strings.HasPrefix(words[1], "--"):
			cmds = []string{words[0]}
		case len(words) > 0 && !strings.HasPrefix(words[0], "--"):
			continue // another program's (`git clone --depth`), or no flag
		}
		for _, f := range spanFlags(words) {
			checked++
			switch {
			case cmds != nil:
				for _, c := range cmds {
					if fl, ok := flagsOf[c]; ok && !fl[f] {
						t.Errorf("README.md:%d: `%s`: titanic %s has no flag %s", s.line, s.text, c, f)
					}
				}
			case s.rowCommands != nil:
				if !slices.ContainsFunc(s.rowCommands, func(c string) bool { return flagsOf[c][f] }) {
					t.Errorf("README.md:%d: `%s`: none of titanic %s has the flag %s", s.line, s.text, strings.Join(s.rowCommands, ", "), f)
				}
			case !anyHas(f):
				t.Errorf("README.md:%d: `%s`: no titanic command has the flag %s", s.line, s.text, f)
			}
		}
	}
	if checked < 100 {
		t.Errorf("checked %d flags of README, want at least 100: the test lost track of README", checked)
	}
}

// spanFlags returns the --flags among a span's words (--a|--b counts both;
// [--x] and --x=V count as --x).
func spanFlags(words []string) []string {
	var out []string
	for _, w := range words {
		for _, p := range strings.Split(w, "|") {
			p = strings.Trim(p, "[](),.:;")
			p, _, _ = strings.Cut(p, "=")
			p, _, _ = strings.Cut(p, "/") // --backup-dir/NAME
			if len(p) > 2 && strings.HasPrefix(p, "--") && p[2] >= 'a' && p[2] <= 'z' {
				out = append(out, p)
			}
		}
	}
	return out
}

// readmeSpan is an inline code span of README.md outside fenced blocks.
type readmeSpan struct {
	line int
	text string
	// rowCommands: in a row of a `| command | ... |` table, the commands
	// its first cell names; in the configuration reference, broker.
	rowCommands []string
}

var spanRE = regexp.MustCompile("`([^`]+)`")

// readmeSpans returns README's code spans outside fenced blocks, a span
// broken over two lines included.
func readmeSpans(src string) []readmeSpan {
	lines := strings.Split(src, "\n")
	in := false
	table := "" // "command", "config" or ""
	var out []readmeSpan
	var para []string
	var paraStart int
	flushPara := func() {
		text := strings.Join(para, "\n")
		for _, m := range spanRE.FindAllStringSubmatchIndex(text, -1) {
			out = append(out, readmeSpan{line: paraStart + strings.Count(text[:m[0]], "\n") + 1, text: strings.Join(strings.Fields(text[m[2]:m[3]]), " ")})
		}
		para = nil
	}
	for i, line := range lines {
		if fence.MatchString(line) {
			flushPara()
			in = !in
			continue
		}
		if in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			table = ""
			if len(para) == 0 {
				paraStart = i
			}
			para = append(para, line)
			if strings.TrimSpace(line) == "" {
				flushPara()
			}
			continue
		}
		flushPara()
		cells := splitRow(line)
		switch {
		case len(cells) > 1 && cells[0] == "command":
			table = "command"
			continue
		case len(cells) > 1 && cells[0] == "Key" && cells[1] == "Flag":
			table = "config"
			continue
		}
		var row []string
		switch table {
		case "config":
			row = []string{"broker"}
		case "command":
			for _, m := range spanRE.FindAllStringSubmatch(cells[0], -1) {
				w := strings.Fields(strings.ReplaceAll(m[1], `\|`, "|"))
				if len(w) > 0 && w[0] == "titanic" && len(w) > 1 {
					w = w[1:]
				}
				if len(w) > 0 && !strings.HasPrefix(w[0], "-") {
					row = append(row, strings.Split(w[0], "|")...)
				}
			}
		}
		for _, m := range spanRE.FindAllStringSubmatch(line, -1) {
			out = append(out, readmeSpan{line: i + 1, text: m[1], rowCommands: row})
		}
	}
	flushPara()
	return out
}

// splitRow splits a Markdown table row on its unescaped |.
func splitRow(line string) []string {
	var cells []string
	var c strings.Builder
	line = strings.Trim(strings.TrimSpace(line), "|")
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' && i+1 < len(line) && line[i+1] == '|' {
			c.WriteString(`\|`)
			i++
			continue
		}
		if line[i] == '|' {
			cells = append(cells, strings.TrimSpace(c.String()))
			c.Reset()
			continue
		}
		c.WriteByte(line[i])
	}
	return append(cells, strings.TrimSpace(c.String()))
}
