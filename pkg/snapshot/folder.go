package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// FolderStore keeps snapshots in a folder: DIR/NAME_vVERSION/ID/ with one file per
// table and a manifest.json written last, so a half-written snapshot is never listed.
type FolderStore struct {
	Dir string
}

func (s FolderStore) dir(projection string, version int) string {
	return filepath.Join(s.Dir, projection+"_v"+strconv.Itoa(version))
}

// Write stores a snapshot in a temporary folder and renames it into place.
func (s FolderStore) Write(_ context.Context, m *Manifest, files func(put func(name string, w func(io.Writer) error) error) error) error {
	base := s.dir(m.Projection, m.Version)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(base, ".partial-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	err = files(func(name string, write func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(tmp, name+".copy"))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(base, m.ID)); err != nil {
		return err
	}
	ok = true
	return nil
}

// List returns the manifests of a projection version, newest first.
func (s FolderStore) List(_ context.Context, projection string, version int) ([]Manifest, error) {
	entries, err := os.ReadDir(s.dir(projection, version))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		m, err := readManifest(filepath.Join(s.dir(projection, version), e.Name()))
		if err != nil {
			continue // not a complete snapshot
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: manifest: %w", ErrChecksum, err)
	}
	return m, nil
}

// Open returns a snapshot's manifest and a way to read its files.
func (s FolderStore) Open(_ context.Context, projection string, version int, id string) (Manifest, func(string) (io.ReadCloser, error), error) {
	dir := filepath.Join(s.dir(projection, version), filepath.Base(id))
	m, err := readManifest(dir)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil, fmt.Errorf("snapshot %s of %s_v%d: %w in %s", id, projection, version, ErrNotFound, s.Dir)
	}
	if err != nil {
		return m, nil, err
	}
	return m, func(name string) (io.ReadCloser, error) {
		return os.Open(filepath.Join(dir, filepath.Base(name)+".copy"))
	}, nil
}

// Delete removes a snapshot.
func (s FolderStore) Delete(_ context.Context, projection string, version int, id string) error {
	return os.RemoveAll(filepath.Join(s.dir(projection, version), filepath.Base(id)))
}

// Prune deletes all but the newest keep snapshots of a projection version and
// returns the ids it deleted.
func Prune(ctx context.Context, store Store, projection string, version, keep int) ([]string, error) {
	ms, err := store.List(ctx, projection, version)
	if err != nil {
		return nil, err
	}
	var gone []string
	for i := keep; i < len(ms); i++ {
		if err := store.Delete(ctx, projection, version, ms[i].ID); err != nil {
			return gone, err
		}
		gone = append(gone, ms[i].ID)
	}
	return gone, nil
}
