//go:build !unix

package snapshot

import "context"

// TryLock implements Locker; without flock the folder is not locked (a caller's
// database lock still serialises instances sharing a database).
func (s FolderStore) TryLock(context.Context, string, int) (func(), error) {
	return func() {}, nil
}

// RLock implements Locker; see TryLock.
func (s FolderStore) RLock(context.Context, string, int) (func(), error) {
	return func() {}, nil
}
