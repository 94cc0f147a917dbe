// Package doclinks checks the documentation's relative links: every link in
// README.md and docs/*.md that points into the repository must name a file or
// folder that exists. Anchors are not checked, nor links to other sites.
package doclinks

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Broken is a relative link whose target does not exist.
type Broken struct {
	File   string // the Markdown file, relative to the root
	Line   int    // 1-based
	Target string // the link as written
}

func (b Broken) String() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Target) }

var (
	fence     = regexp.MustCompile("(?m)^ {0,3}(```|~~~)[^\n]*\n(?:[\\s\\S]*?\n)?? {0,3}(```|~~~)[ \t]*$")
	codeSpan  = regexp.MustCompile("``[^`]+``|`[^`]+`")
	inline    = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	reference = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	htmlAttr  = regexp.MustCompile(`(?:src|href)="([^"]+)"`)
)

// Files lists the Markdown files Check reads under root: README.md and every
// .md file under docs/.
func Files(root string) ([]string, error) {
	files := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	return files, err
}

// Check reads each file (relative to root) and returns the links that point
// at nothing.
func Check(root string, files []string) ([]Broken, error) {
	var broken []Broken
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		for _, l := range Links(string(b)) {
			target, ok := local(l.Target)
			if !ok {
				continue
			}
			p := path.Join(path.Dir(f), target)
			if strings.HasPrefix(target, "/") {
				p = target // GitHub reads a leading slash as the repository's root
			}
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
				broken = append(broken, Broken{File: f, Line: l.Line, Target: l.Target})
			}
		}
	}
	return broken, nil
}

// Link is one link found in a Markdown text.
type Link struct {
	Line   int
	Target string
}

// Links returns the link targets in a Markdown text: inline links and images,
// reference definitions and HTML src/href attributes, outside code.
func Links(text string) []Link {
	blank := func(s string) string { // keep newlines, so that offsets keep their line
		return strings.Map(func(r rune) rune {
			if r == '\n' {
				return r
			}
			return ' '
		}, s)
	}
	text = fence.ReplaceAllStringFunc(text, blank)
	text = codeSpan.ReplaceAllStringFunc(text, blank)
	var links []Link
	for _, re := range []*regexp.Regexp{inline, reference, htmlAttr} {
		for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
			links = append(links, Link{
				Line:   1 + strings.Count(text[:m[2]], "\n"),
				Target: text[m[2]:m[3]],
			})
		}
	}
	return links
}

// local returns the path part of a link into the repository, and false for a
// link elsewhere (a scheme such as https: or mailto:) or to an anchor alone.
func local(target string) (string, bool) {
	if u, err := url.Parse(target); err != nil || u.Scheme != "" || u.Host != "" {
		return "", err != nil // an unparsable target is reported as broken
	}
	p, _, _ := strings.Cut(target, "#")
	p, _, _ = strings.Cut(p, "?")
	if p == "" {
		return "", false
	}
	if unescaped, err := url.PathUnescape(p); err == nil {
		p = unescaped
	}
	return p, true
}
