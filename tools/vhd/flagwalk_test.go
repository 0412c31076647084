package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The flag walk: every string vhd can print (messages, hints, help) that
// names a flag must name one the command has. Strings are found in the
// source, not by running error paths: a static walk from each command's
// table entry through every function it can reach, here and in the
// vhdkit packages it calls, finds them all, including messages of error
// paths no test runs.
//
// The call graph is conservative: a call x.M() may be any method named M
// in the caller's package or the packages it imports, and a reference to
// a function (called or
// passed as a value) is an edge. So a string is blamed on every command
// that might print it, and a library message naming a flag only some
// callers have shows up as an offender for the others.
//
// Attribution within a string: a flag inside a quoted command, as in
// "'vhd umount --commit MNT'", belongs to that command; any other flag
// belongs to the command printing the string.

// walkNode is a function, method, variable or constant: the strings it
// holds and what it refers to.
type walkNode struct {
	strs []walkString
	refs []string // node keys, or "method:NAME"
}

type walkString struct {
	pos  token.Position
	text string
}

// walkProgram is the parsed packages: nodes by key ("pkg.Name",
// "pkg.Recv.Name" for methods).
type walkProgram struct {
	fset    *token.FileSet
	nodes   map[string]*walkNode
	methods map[string][]string // method name -> node keys
	loaded  map[string]bool
	imports map[string][]string // package -> the vhdkit packages it imports
	cmdVars map[string]string   // command name -> node key of its table entry
}

const modulePath = "vhdkit/"

func loadWalk(t *testing.T) *walkProgram {
	t.Helper()
	p := &walkProgram{fset: token.NewFileSet(), nodes: map[string]*walkNode{}, methods: map[string][]string{}, loaded: map[string]bool{}, imports: map[string][]string{}, cmdVars: map[string]string{}}
	p.loadPackage(t, "main", ".")
	return p
}

// loadPackage parses the non-test files of dir as package key, then each
// vhdkit package it imports.
func (p *walkProgram) loadPackage(t *testing.T, key, dir string) {
	if p.loaded[key] {
		return
	}
	p.loaded[key] = true
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*ast.File
	top := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(p.fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
		for _, d := range f.Decls {
			for _, n := range declNames(d) {
				top[n] = true
			}
		}
	}
	var deps []string
	for _, f := range parsed {
		imports := fileImports(f)
		for _, path := range imports {
			if strings.HasPrefix(path, modulePath) {
				deps = append(deps, path)
			}
		}
		for _, d := range f.Decls {
			p.addDecl(key, d, &walkScope{pkg: key, top: top, imports: imports})
		}
	}
	for _, path := range deps {
		k := strings.TrimPrefix(path, modulePath)
		p.imports[key] = append(p.imports[key], k)
		p.loadPackage(t, k, filepath.Join("..", "..", k))
	}
}

// declNames are the package-level names a declaration defines (methods
// excluded: they are reached by name through selectors).
func declNames(d ast.Decl) []string {
	var out []string
	switch d := d.(type) {
	case *ast.FuncDecl:
		if d.Recv == nil {
			out = append(out, d.Name.Name)
		}
	case *ast.GenDecl:
		for _, s := range d.Specs {
			if vs, ok := s.(*ast.ValueSpec); ok {
				for _, n := range vs.Names {
					out = append(out, n.Name)
				}
			}
		}
	}
	return out
}

// fileImports maps a file's import names to import paths.
func fileImports(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, im := range f.Imports {
		path, _ := strconv.Unquote(im.Path.Value)
		name := filepath.Base(path)
		if im.Name != nil {
			name = im.Name.Name
		}
		m[name] = path
	}
	return m
}

type walkScope struct {
	pkg     string
	top     map[string]bool
	imports map[string]string
}

func (p *walkProgram) addDecl(pkg string, d ast.Decl, sc *walkScope) {
	switch d := d.(type) {
	case *ast.FuncDecl:
		key := pkg + "." + d.Name.Name
		if d.Recv != nil && len(d.Recv.List) > 0 {
			key = pkg + "." + recvName(d.Recv.List[0].Type) + "." + d.Name.Name
			p.methods[d.Name.Name] = append(p.methods[d.Name.Name], key)
		} else if d.Name.Name == "init" {
			key += "#" + strconv.Itoa(len(p.nodes))
		}
		n := &walkNode{}
		if d.Body != nil {
			p.collect(d.Body, sc, n)
		}
		p.nodes[key] = n
	case *ast.GenDecl:
		for _, s := range d.Specs {
			vs, ok := s.(*ast.ValueSpec)
			if !ok {
				continue
			}
			n := &walkNode{}
			for _, v := range vs.Values {
				p.collect(v, sc, n)
			}
			for _, name := range vs.Names {
				p.nodes[pkg+"."+name.Name] = n
				if c := commandName(vs); c != "" && pkg == "main" {
					p.cmdVars[c] = pkg + "." + name.Name
				}
			}
		}
	}
}

// commandName is the name of a `var xCmd = &command{name: ...}` entry.
func commandName(vs *ast.ValueSpec) string {
	if len(vs.Values) != 1 {
		return ""
	}
	u, ok := vs.Values[0].(*ast.UnaryExpr)
	if !ok {
		return ""
	}
	cl, ok := u.X.(*ast.CompositeLit)
	if !ok || !isIdent(cl.Type, "command") {
		return ""
	}
	for _, e := range cl.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if k, isID := kv.Key.(*ast.Ident); ok && isID && k.Name == "name" {
			if lit, ok := kv.Value.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				return s
			}
		}
	}
	return ""
}

func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.IndexListExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	}
	return "?"
}

// collect records the strings under root and what it refers to. Strings
// that are other programs' command lines (elements of a []string, the
// arguments of exec.Command) are not messages and are left out.
func (p *walkProgram) collect(root ast.Node, sc *walkScope, n *walkNode) {
	var visit func(ast.Node) bool
	visit = func(x ast.Node) bool {
		switch x := x.(type) {
		case *ast.BasicLit:
			if x.Kind == token.STRING {
				s, err := strconv.Unquote(x.Value)
				if err == nil {
					n.strs = append(n.strs, walkString{p.fset.Position(x.Pos()), s})
				}
			}
		case *ast.Ident:
			if sc.top[x.Name] {
				n.refs = append(n.refs, sc.pkg+"."+x.Name)
			}
		case *ast.SelectorExpr:
			if id, ok := x.X.(*ast.Ident); ok {
				if path, isPkg := sc.imports[id.Name]; isPkg && !sc.top[id.Name] {
					if strings.HasPrefix(path, modulePath) {
						n.refs = append(n.refs, strings.TrimPrefix(path, modulePath)+"."+x.Sel.Name)
					}
					return false
				}
			}
			n.refs = append(n.refs, "method:"+sc.pkg+":"+x.Sel.Name)
			ast.Inspect(x.X, visit)
			return false
		case *ast.KeyValueExpr:
			if _, isField := x.Key.(*ast.Ident); !isField {
				ast.Inspect(x.Key, visit)
			}
			ast.Inspect(x.Value, visit)
			return false
		case *ast.CompositeLit:
			if at, ok := x.Type.(*ast.ArrayType); ok && isIdent(at.Elt, "string") {
				inspectNonLiterals(x.Elts, visit)
				return false
			}
		case *ast.CallExpr:
			if sel, ok := x.Fun.(*ast.SelectorExpr); ok && isIdent(sel.X, "exec") && strings.HasPrefix(sel.Sel.Name, "Command") {
				inspectNonLiterals(x.Args, visit)
				return false
			}
		}
		return true
	}
	ast.Inspect(root, visit)
}

func inspectNonLiterals(list []ast.Expr, visit func(ast.Node) bool) {
	for _, e := range list {
		if _, lit := e.(*ast.BasicLit); !lit {
			ast.Inspect(e, visit)
		}
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// reach returns every node reachable from root, never entering another
// command's table entry (help and the dispatcher list them all).
func (p *walkProgram) reach(root string) map[string]bool {
	stop := map[string]bool{"main.commands": true}
	for _, k := range p.cmdVars {
		stop[k] = k != root
	}
	seen := map[string]bool{}
	var queue []string
	push := func(k string) {
		if !seen[k] && !stop[k] {
			seen[k] = true
			queue = append(queue, k)
		}
	}
	push(root)
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		n := p.nodes[k]
		if n == nil {
			continue
		}
		for _, r := range n.refs {
			if call, ok := strings.CutPrefix(r, "method:"); ok {
				from, name, _ := strings.Cut(call, ":")
				for _, m := range p.methods[name] {
					if p.visible(from, m) {
						push(m)
					}
				}
				continue
			}
			push(r)
		}
	}
	return seen
}

// visible reports whether code in package from can call the method with
// node key m: its type is declared in from or in a package from imports,
// directly or not (a value of a type from elsewhere cannot reach it).
func (p *walkProgram) visible(from, m string) bool {
	pkg, _, _ := strings.Cut(m, ".")
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(k string) bool {
		if k == pkg {
			return true
		}
		if seen[k] {
			return false
		}
		seen[k] = true
		for _, d := range p.imports[k] {
			if walk(d) {
				return true
			}
		}
		return false
	}
	return walk(from)
}

var (
	quotedVhd = regexp.MustCompile(`'vhd ([a-z][a-z-]*)([^']*)'`)
	flagName  = regexp.MustCompile(`(?:^|[^A-Za-z0-9_-])--([a-z][a-z0-9-]*)`)
)

// flagMention is a flag a string names and the command it belongs to
// ("" for vhd itself: --help, --version).
type flagMention struct{ cmd, flag string }

// mentions attributes each flag a string names: to the command quoted
// around it, else to owner.
func mentions(s, owner string) []flagMention {
	var out []flagMention
	for _, m := range quotedVhd.FindAllStringSubmatch(s, -1) {
		cmd := m[1]
		if lookup(cmd) == nil {
			cmd = ""
		}
		for _, f := range flagName.FindAllStringSubmatch(m[2], -1) {
			out = append(out, flagMention{cmd, f[1]})
		}
	}
	for _, f := range flagName.FindAllStringSubmatch(quotedVhd.ReplaceAllString(s, " "), -1) {
		out = append(out, flagMention{owner, f[1]})
	}
	return out
}

// hasFlag reports whether command cmd ("" for vhd itself) has flag.
func hasFlag(cmd, flag string) bool {
	if cmd == "" {
		return flag == "help" || flag == "version"
	}
	c := lookup(cmd)
	fs := newFlagSet(c)
	fs.BoolP("help", "h", false, "")
	setupFlags(c, fs)
	return fs.Lookup(flag) != nil
}

// TestEveryNamedFlagExists walks every string each command can print and
// checks each flag it names exists on the command it names it for.
func TestEveryNamedFlagExists(t *testing.T) {
	p := loadWalk(t)
	roots := map[string]string{"": "main.main"}
	for _, c := range commands {
		k, ok := p.cmdVars[c.name]
		if !ok {
			t.Fatalf("the walk found no table entry for command %s", c.name)
		}
		roots[c.name] = k
	}
	// The walk must see through to the libraries, or it proves nothing.
	for cmd, want := range map[string]string{"umount": "chains.Merge", "undo": "engine.lockFile", "info": "engine.lockFile", "": "main.hint", "mount": "vhdfs.Mount", "serve": "nbdserve.Server.Serve"} {
		if !p.reach(roots[cmd])[want] {
			t.Fatalf("the walk from %q does not reach %s", cmd, want)
		}
	}
	var bad []string
	checked := 0
	for owner, root := range roots {
		for k := range p.reach(root) {
			n := p.nodes[k]
			if n == nil {
				continue // a type, or a name from outside the module
			}
			for _, s := range n.strs {
				for _, m := range mentions(s.text, owner) {
					checked++
					if !hasFlag(m.cmd, m.flag) {
						bad = append(bad, offender(s, m))
					}
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d flag mentions found: the walk is broken", checked)
	}
	sort.Strings(bad)
	bad = dedupe(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

func offender(s walkString, m flagMention) string {
	cmd := "vhd"
	if m.cmd != "" {
		cmd = "vhd " + m.cmd
	}
	rel := s.pos.Filename
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, rel); err == nil {
			rel = r
		}
	}
	text := s.text
	if len(text) > 120 {
		i := max(0, strings.Index(text, "--"+m.flag)-50)
		text = "..." + text[i:min(len(text), i+120)] + "..."
	}
	return rel + ":" + strconv.Itoa(s.pos.Line) + ": '" + cmd + "' can print " + strconv.Quote(text) + ", naming --" + m.flag + ", which it does not have"
}

func dedupe(list []string) []string {
	var out []string
	for i, s := range list {
		if i == 0 || s != list[i-1] {
			out = append(out, s)
		}
	}
	return out
}
