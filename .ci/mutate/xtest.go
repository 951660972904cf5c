package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// A package's external tests (its _test.go files of package <name>_test)
// are compiled into every test binary of the package, mutated or not, and
// for the root package that is ~2.5 s of a mutation's ~8 s build (its 26
// files, and the packages they import that import the mutated one, rebuilt
// and linked). No entry of the table runs one of them. So a mutation whose
// -run names none of a package's external tests is built with those files
// replaced, through the overlay, by one that holds only their package
// clause: what runs is the same, the build is shorter.

// xtests is what a package's external tests are: their files and the names
// of their top-level tests, examples and fuzz targets, which -run selects.
type xtests struct {
	pkg   string   // the external package's name, notifier_test
	files []string // absolute paths
	names []string // TestX, ExampleY, FuzzZ
}

var (
	xtestsMu   sync.Mutex
	xtestsSeen = map[string]*xtests{} // by package directory
)

// xtestsOf parses the _test.go files of the package in dir once and says
// what its external tests are (nil if it has none, or on any error: then
// nothing is left out).
func xtestsOf(dir string) *xtests {
	xtestsMu.Lock()
	defer xtestsMu.Unlock()
	if x, ok := xtestsSeen[dir]; ok {
		return x
	}
	var x *xtests
	paths, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	fset := token.NewFileSet()
	for _, p := range paths {
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			x = nil
			break
		}
		if !strings.HasSuffix(f.Name.Name, "_test") {
			continue
		}
		if x == nil {
			x = &xtests{pkg: f.Name.Name}
		}
		x.files = append(x.files, p)
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
				x.names = append(x.names, fn.Name.Name)
			}
		}
	}
	xtestsSeen[dir] = x
	return x
}

// leaveOutXTests adds to replace, an overlay's Replace map, a stub for each
// external test file of m's package, written to dir, when m's -run matches
// none of their top-level names, and none of them is a TestMain, which sets
// up every test of the binary. Every top-level function counts, not only
// those that go test would run: leaving a file in costs only time.
func leaveOutXTests(root, dir string, m mutation, replace map[string]string) error {
	x := xtestsOf(filepath.Join(root, m.pkg))
	if x == nil {
		return nil
	}
	top, err := regexp.Compile(topLevel(m.run))
	if err != nil {
		return nil
	}
	for _, n := range x.names {
		if top.MatchString(n) || n == "TestMain" { // a TestMain there runs every test
			return nil
		}
	}
	stub := filepath.Join(dir, "xtest_stub.go")
	if err := os.WriteFile(stub, []byte("package "+x.pkg+"\n"), 0o644); err != nil {
		return err
	}
	for _, f := range x.files {
		if _, mutated := replace[f]; !mutated {
			replace[f] = stub
		}
	}
	return nil
}

// topLevel is the part of a -run pattern that go test matches against
// top-level names: up to its first '/' outside brackets and parentheses,
// as the testing package splits it.
func topLevel(pattern string) string {
	class, paren := 0, 0
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case '\\':
			i++
		case '[':
			class++
		case ']':
			class = max(class-1, 0)
		case '(':
			if class == 0 {
				paren++
			}
		case ')':
			if class == 0 {
				paren--
			}
		case '/':
			if class == 0 && paren == 0 {
				return pattern[:i]
			}
		}
	}
	return pattern
}
