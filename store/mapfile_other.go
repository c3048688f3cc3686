//go:build !unix

package store

import (
	"errors"
	"os"
)

// mapFile is not available here: the walk reads the file.
func mapFile(*os.File, uint64) ([]byte, func(), error) {
	return nil, nil, errors.New("no map")
}
