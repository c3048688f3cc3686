//go:build !unix

package bench

import "time"

// processCPU is not measured here: cpu-us/op is then not reported.
func processCPU() time.Duration { return 0 }

// pidCPU is not measured here: broker-cpu-us/op is then not reported.
func pidCPU(int) (time.Duration, bool) { return 0, false }
