package doclinks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocsLinksResolve is the check make lint runs: every relative link in
// README.md and docs/ names a file or folder of the repository.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	files, err := Files(root)
	require.NoError(t, err)
	require.Contains(t, files, "docs/concepts.md")
	broken, err := Check(root, files)
	require.NoError(t, err)
	for _, b := range broken {
		t.Errorf("%s: the link's target does not exist", b)
	}
}

func TestCheckFindsMissingTargetsOnly(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "docs", "here.md"), []byte("# here\n"), 0o644))
	// A backtick cannot appear in a raw string: ' stands for it.
	readme := strings.ReplaceAll(`# readme

[ok](docs/here.md) [ok anchor](docs/here.md#here) [site](https://example.com/x.md)
[anchor only](#readme) ![img](docs/gone.png) [folder](docs/) [root](/docs/here.md)
[missing](docs/missing.md#part) and '[code](not/a/link.md)'

[ref]: docs/also-missing.md
<img src="docs/here.md">

'''go
x := a[i](b) // [c](d.md)
'''
`, "'", "`")
	require.NoError(t, os.WriteFile(filepath.Join(root, "README.md"), []byte(readme), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "docs", "page.md"), []byte("[up](../README.md) [bad](../nope.md)\n"), 0o644))

	files, err := Files(root)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"README.md", "docs/here.md", "docs/page.md"}, files)
	broken, err := Check(root, files)
	require.NoError(t, err)
	var got []string
	for _, b := range broken {
		got = append(got, b.String())
	}
	require.ElementsMatch(t, []string{
		"README.md:4: docs/gone.png",
		"README.md:5: docs/missing.md#part",
		"README.md:7: docs/also-missing.md",
		"docs/page.md:1: ../nope.md",
	}, got)
}
