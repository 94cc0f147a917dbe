//go:build unix

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// TryLock implements Locker with an exclusive flock on the file .lock in the
// projection version's folder; the kernel releases it if the process dies.
func (s FolderStore) TryLock(_ context.Context, projection string, version int) (func(), error) {
	f, err := s.lockFile(projection, version)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("snapshot: lock %s: %w", f.Name(), err)
	}
	return unlocker(f), nil
}

// RLock implements Locker with a shared flock on the same file, polled so that ctx
// can end the wait.
func (s FolderStore) RLock(ctx context.Context, projection string, version int) (func(), error) {
	f, err := s.lockFile(projection, version)
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return unlocker(f), nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("snapshot: lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (s FolderStore) lockFile(projection string, version int) (*os.File, error) {
	dir := s.dir(projection, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
}

func unlocker(f *os.File) func() {
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}
}
