package store_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// frameworkTables are the tables package store owns (migrations/).
var frameworkTables = []string{
	"offsets", "effect_offsets", "aggregates", "event_ids", "parked", "parked_effects",
	"effect_starts", "active_versions", "migrations", "schema_migrations",
}

// sqlNamingTable matches SQL that names a framework table: a keyword that takes a
// relation (FROM, INTO, UPDATE, JOIN, TABLE, ON, ONLY, to_regclass), then the table,
// schema-qualified or not, quoted or not; or a literal that continues a
// schema-qualified name built by concatenation (`FROM ` + q + `.offsets`). A
// qualified name matches whatever the keyword's case; an unqualified one only after
// an upper-case keyword, as SQL is written here, so that prose ("wait on parked
// events", "reset offsets") does not match: the guard looks for SQL's shape, not
// for the words.
var sqlNamingTable = func() *regexp.Regexp {
	tables := `"?(` + strings.Join(frameworkTables, "|") + `)"?(?:[^A-Za-z0-9_"]|$)`
	ident := `(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_]*|%[a-z])` // %s: a schema put in by fmt
	keyword := `\b(?:FROM|INTO|UPDATE|JOIN|TABLE|ON|ONLY)\s+`
	return regexp.MustCompile(`(?i:` + keyword + `|\bto_regclass\(\s*')` + ident + `\.` + tables + // qualified
		`|` + keyword + tables + // unqualified
		`|^\s*\.` + tables) // continued: ` + q + `.offsets
}()

// offence is one place outside package store that names a framework table.
type offence struct {
	pos  token.Position
	what string
}

// scanFile returns where src names a framework table: SQL in a string literal, a
// table's name in a pgx.Identifier, or a use of this package's table names.
func scanFile(fset *token.FileSet, name string, src any) ([]offence, error) {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	storeName := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/projector/projector/internal/store" {
			storeName = "store"
			if imp.Name != nil {
				storeName = imp.Name.Name
			}
		}
	}
	var out []offence
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(n.Value)
			if err != nil {
				s = n.Value
			}
			if m := sqlNamingTable.FindStringSubmatch(s); m != nil {
				out = append(out, offence{fset.Position(n.Pos()), "SQL naming table " + m[1] + m[2] + m[3] + ": " + strings.TrimSpace(m[0])})
			}
		case *ast.CompositeLit:
			if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Identifier" {
				for _, e := range n.Elts {
					if lit, ok := e.(*ast.BasicLit); ok && isFrameworkTable(lit.Value) {
						out = append(out, offence{fset.Position(lit.Pos()), "identifier of table " + lit.Value})
					}
				}
			}
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok && storeName != "" && x.Name == storeName &&
				(n.Sel.Name == "TablesIn" || n.Sel.Name == "Tables" || n.Sel.Name == "tablesIn" || n.Sel.Name == "tables") {
				out = append(out, offence{fset.Position(n.Pos()), "store." + n.Sel.Name})
			}
		}
		return true
	})
	return out, nil
}

func isFrameworkTable(quoted string) bool {
	s, err := strconv.Unquote(quoted)
	if err != nil {
		return false
	}
	for _, t := range frameworkTables {
		if s == t {
			return true
		}
	}
	return false
}

// moduleRoot is the directory holding go.mod, above this package.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test")
		dir = parent
	}
}

// Package store is the one owner of the framework's schema: no Go file of the module
// outside it writes SQL naming a framework table, builds one's name, or asks this
// package for the names. Test files are exempt: tests look at the rows directly to
// check what the framework stored, and a test is no second owner of the schema.
func TestNoFrameworkTableNamedOutsideStore(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	self, err := filepath.Abs(".")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var offences []string
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || (path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		found, err := scanFile(fset, path, nil)
		if err != nil {
			return err
		}
		for _, o := range found {
			rel, _ := filepath.Rel(root, o.pos.Filename)
			offences = append(offences, rel+":"+strconv.Itoa(o.pos.Line)+": "+o.what)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, files, 50, "the walk found the module's files")
	require.Empty(t, offences, "framework tables named outside internal/store: move the query into package store")
}

// The detector flags each way of naming a framework table and passes prose and other
// tables, so that the guard above cannot pass by seeing nothing.
func TestDetectorFlagsSQLNamingAFrameworkTable(t *testing.T) {
	t.Parallel()
	const dirty = `package p

import (
	"github.com/jackc/pgx/v5"
	st "github.com/projector/projector/internal/store"
)

var (
	a = "SELECT next_offset FROM projector.offsets WHERE projection = $1"
	b = ` + "`" + `INSERT INTO "projector"."parked" (id) VALUES (1)` + "`" + `
	c = "UPDATE " + q + ".effect_starts SET horizon = $1"
	d = "DELETE FROM parked_effects"
	e = "SELECT to_regclass('projector.offsets')"
	f = "CREATE TRIGGER x AFTER INSERT ON " + q + ".offsets FOR EACH ROW"
	g = "SELECT 1 FROM x JOIN aggregates USING (subject)"
	h = pgx.Identifier{schema, "event_ids"}.Sanitize()
	i = st.TablesIn(schema).Offsets
	j = "SELECT * FROM projector.active_versions"
	k = fmt.Sprintf("DELETE FROM %s.effect_offsets WHERE projection = $1", q)
)
`
	got, err := scanFile(token.NewFileSet(), "dirty.go", dirty)
	require.NoError(t, err)
	lines := map[int]bool{}
	for _, o := range got {
		lines[o.pos.Line] = true
	}
	for line := 9; line <= 19; line++ {
		require.True(t, lines[line], "line %d not flagged; got %v", line, got)
	}

	const clean = `package p

import "github.com/projector/projector/internal/store"

var (
	a = "stored offsets are ahead of the topic"
	b = "reset offsets from the earliest"
	c = "SELECT id FROM users.accounts WHERE parked = true"
	d = "the event parked; later events of its aggregate wait on parked events"
	e = "SELECT count(*) FROM orders_v1.aggregates_view"
	f = pgx.Identifier{schema, "accounts"}.Sanitize()
	g = store.Positions
	h = "INSERT INTO offsets_archive VALUES (1)"
)
`
	got, err = scanFile(token.NewFileSet(), "clean.go", clean)
	require.NoError(t, err)
	require.Empty(t, got)
}
