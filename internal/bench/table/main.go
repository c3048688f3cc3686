// Command table prints the benchmark table of issue 10 as markdown, from
// the output of `go test -bench` over internal/bench (stdout and stderr):
// one row per BenchmarkTableJobs and BenchmarkTableSubmit sub-benchmark
// and BenchmarkTablePipelined sub-benchmark, beside the raw fsync rate of
// the same run and the machine it ran on. `make bench` runs it on
// bench.txt.
//
//	go run ./internal/bench/table bench.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// result is one benchmark line: its name without the -GOMAXPROCS suffix
// and its metrics by unit.
type result struct {
	name    string
	metrics map[string]float64
}

var (
	procsSuffix = regexp.MustCompile(`-\d+$`)
	baseline    = regexp.MustCompile(`raw fsync baseline (\d+) fsyncs/s`)
)

// parse reads go test -bench output: the benchmark lines, and the raw
// fsync rate the package's one-second probe prints on stderr (0 when
// absent).
func parse(r io.Reader) ([]result, float64, error) {
	var (
		out  []result
		rate float64
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := baseline.FindStringSubmatch(line); m != nil && rate == 0 {
			rate, _ = strconv.ParseFloat(m[1], 64)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		res := result{name: procsSuffix.ReplaceAllString(f[0], ""), metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			res.metrics[f[i+1]] = v
		}
		out = append(out, res)
	}
	return out, rate, sc.Err()
}

// params splits "BenchmarkX/mode=pair/workers=8/clients=64" into its
// key=value parts.
func params(name string) map[string]string {
	p := map[string]string{}
	for _, part := range strings.Split(name, "/")[1:] {
		if k, v, ok := strings.Cut(part, "="); ok {
			p[k] = v
		}
	}
	return p
}

var modeNames = map[string]string{"single": "single node", "pair": "Binary Star pair", "group3": "3-node raft group"}

// thousands formats v with no decimals and comma thousands.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func plural(n, word string) string {
	if n == "1" {
		return n + " " + word
	}
	return n + " " + word + "s"
}

func row(w io.Writer, r result, rate float64) {
	p := params(r.name)
	mode := modeNames[p["mode"]]
	var load, value string
	var ops, commits float64
	switch {
	case strings.HasPrefix(r.name, "BenchmarkTableJobs/"):
		load = plural(p["workers"], "worker") + ", " + p["clients"] + " clients"
		ops = r.metrics["jobs/s"]
		value = thousands(ops) + " jobs/s"
		commits = r.metrics["commits/op"]
	case strings.HasPrefix(r.name, "BenchmarkTableSubmit/"):
		load = plural(p["clients"], "client")
		ops = r.metrics["submits/s"]
		value = thousands(ops) + " submits/s"
		commits = r.metrics["commits/op"]
	case strings.HasPrefix(r.name, "BenchmarkTablePipelined/"):
		load = "1 pipelined client (" + p["window"] + " in flight, Go client)"
		ops = r.metrics["submits/s"]
		value = thousands(ops) + " submits/s"
		commits = r.metrics["commits/op"]
	default:
		return
	}
	// A titanic commit is at most one bbolt transaction on a single node
	// (the store's writer may merge several), two fdatasyncs each.
	// In a pair or group a commit is one raft entry, whose fsyncs on each
	// voter the benchmark does not count.
	fsyncs := "n/a"
	if p["mode"] == "single" {
		fsyncs = fmt.Sprintf("≤ %.3f", 2*commits)
	}
	ratio := "n/a"
	if rate > 0 {
		ratio = fmt.Sprintf("%.2f", ops/rate)
	}
	// CPU per op: every broker process of the deployment, and the load
	// (the test process).
	cpu := "n/a"
	if v, ok := r.metrics["broker-cpu-us/op"]; ok {
		cpu = fmt.Sprintf("%.0f / %.0f", v, r.metrics["load-cpu-us/op"])
	}
	fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f / %.2f | %.3f | %s | %s |\n",
		mode, load, value, ratio, r.metrics["p50-ms"], r.metrics["p99-ms"], commits, fsyncs, cpu)
}

// machine describes the host: cores, CPU model and load average now.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%d cores (%s), load average %s (1/5/15 min) when the table was printed", runtime.NumCPU(), model, load)
}

func main() {
	in := io.Reader(os.Stdin)
	if len(os.Args) > 1 {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
		defer f.Close()
		in = f
	}
	results, rate, err := parse(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "table:", err)
		os.Exit(1)
	}
	// The ratios divide by BenchmarkFsyncBaseline (b.N fsyncs, seconds
	// long) when it ran; the one-second probe of the package's first
	// benchmark is printed beside it, as a sign of how steady the disk was.
	probe := rate
	for _, r := range results {
		if strings.HasPrefix(r.name, "BenchmarkFsyncBaseline") {
			rate = r.metrics["fsyncs/s"]
		}
	}
	w := os.Stdout
	fmt.Fprintf(w, "%s, %s; raw write+fdatasync: %s/s (BenchmarkFsyncBaseline; the 1 s probe at the start: %s/s)\n\n",
		time.Now().Format(time.DateOnly), machine(), thousands(rate), thousands(probe))
	fmt.Fprintln(w, "| deployment | load | durable rate | × raw fsync | submit p50 / p99 ms | commits/op | fsyncs/op | CPU µs/op: brokers / load |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	// Grouped by deployment: jobs rows, then submit rows, then the
	// pipelined client's.
	n := 0
	for _, mode := range []string{"single", "pair", "group3"} {
		for _, prefix := range []string{"BenchmarkTableJobs/", "BenchmarkTableSubmit/", "BenchmarkTablePipelined/"} {
			for _, r := range results {
				if strings.HasPrefix(r.name, prefix) && params(r.name)["mode"] == mode {
					row(w, r, rate)
					n++
				}
			}
		}
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "table: no BenchmarkTable results in the input")
		os.Exit(1)
	}
}
