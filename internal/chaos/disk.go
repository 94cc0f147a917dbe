package chaos

import (
	"errors"
	"os"
	"syscall"
)

// fillDisk writes to path until the file system is full and returns the bytes written.
func fillDisk(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func removeFile(path string) error { return os.Remove(path) }
