package doclinks

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// An excerpt is a code block in a Markdown file that is taken from a source file:
// the line before its opening fence names the file and the region,
//
//	<!-- excerpt: examples/orders/events.go events -->
//
// and the region is the lines between "// tutorial:begin NAME" and
// "// tutorial:end NAME" in that file. CheckExcerpts reports every excerpt whose
// block differs from its region, so a doc cannot drift from the code it shows.

// Excerpt is one code block of a Markdown file taken from a region of a source file.
type Excerpt struct {
	File   string // the Markdown file, relative to the root
	Line   int    // 1-based line of the excerpt marker
	Source string // the source file, relative to the root
	Region string
	Block  string // the code block's lines, without its fences
}

var excerptMarker = regexp.MustCompile(`^<!-- excerpt: (\S+) (\S+) -->$`)

// Excerpts reads the excerpts of the Markdown file doc (relative to root).
func Excerpts(root, doc string) ([]Excerpt, error) {
	b, err := os.ReadFile(filepath.Join(root, doc))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	var out []Excerpt
	for i := 0; i < len(lines); i++ {
		m := excerptMarker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			return nil, fmt.Errorf("%s:%d: an excerpt marker must be followed by a code fence", doc, i+1)
		}
		end := i + 2
		for end < len(lines) && lines[end] != "```" {
			end++
		}
		if end == len(lines) {
			return nil, fmt.Errorf("%s:%d: the excerpt's code block is not closed", doc, i+1)
		}
		out = append(out, Excerpt{File: doc, Line: i + 1, Source: m[1], Region: m[2], Block: strings.Join(lines[i+2:end], "\n")})
		i = end
	}
	return out, nil
}

// Region returns the lines of the source file between its markers
// "// tutorial:begin NAME" and "// tutorial:end NAME", without trailing blank lines.
func Region(root, source, name string) (string, error) {
	f, err := os.Open(filepath.Join(root, source))
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	var lines []string
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch l := sc.Text(); strings.TrimSpace(l) {
		case "// tutorial:begin " + name:
			in, found = true, true
		case "// tutorial:end " + name:
			in = false
		default:
			if in {
				lines = append(lines, l)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if !found {
		return "", fmt.Errorf("%s has no region %q", source, name)
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n"), nil
}

// CheckExcerpts returns a message for every excerpt of doc that differs from its
// region, or names a region or file that does not exist.
func CheckExcerpts(root, doc string) ([]string, error) {
	exs, err := Excerpts(root, doc)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, e := range exs {
		want, err := Region(root, e.Source, e.Region)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s:%d: %v", e.File, e.Line, err))
		case want != strings.TrimRight(e.Block, "\n"):
			bad = append(bad, fmt.Sprintf("%s:%d: the block differs from region %q of %s; it should read:\n%s", e.File, e.Line, e.Region, e.Source, want))
		}
	}
	return bad, nil
}
