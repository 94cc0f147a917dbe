package doclinks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTutorialExcerptsAreTheExamplesSource is run by make lint (and make test):
// every code block of docs/tutorial.md is a region of examples/orders, verbatim.
func TestTutorialExcerptsAreTheExamplesSource(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	exs, err := Excerpts(root, "docs/tutorial.md")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(exs), 5, "docs/tutorial.md's excerpts")
	bad, err := CheckExcerpts(root, "docs/tutorial.md")
	require.NoError(t, err)
	for _, b := range bad {
		t.Error(b)
	}
	// Every Go block of the tutorial is an excerpt: none is retyped.
	doc, err := os.ReadFile(filepath.Join(root, "docs", "tutorial.md"))
	require.NoError(t, err)
	require.Equal(t, len(exs), strings.Count(string(doc), "\n```go\n"), "Go blocks in docs/tutorial.md without an excerpt marker")
}

func TestCheckExcerptsFindsADriftedBlock(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	src := "package x\n\n// tutorial:begin one\nfunc A() {}\n\n// tutorial:end one\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "x.go"), []byte(src), 0o644))
	fence := "```"
	doc := "# doc\n\n<!-- excerpt: x.go one -->\n" + fence + "go\nfunc A() {}\n" + fence + "\n\n" +
		"<!-- excerpt: x.go one -->\n" + fence + "go\nfunc B() {}\n" + fence + "\n\n" +
		"<!-- excerpt: x.go two -->\n" + fence + "go\n" + fence + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "doc.md"), []byte(doc), 0o644))
	bad, err := CheckExcerpts(root, "doc.md")
	require.NoError(t, err)
	require.Len(t, bad, 2)
	require.Contains(t, bad[0], "doc.md:8: the block differs from region \"one\" of x.go")
	require.Contains(t, bad[1], "doc.md:13: x.go has no region \"two\"")
}
