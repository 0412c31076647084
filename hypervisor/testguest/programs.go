package testguest

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// libDirs are where a program's shared libraries are looked for on the
// host, in order (Debian's multiarch folders first).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// guestLibDir is where the guest's copies go: a folder the dynamic
// loader searches by default (the scripts may also set
// LD_LIBRARY_PATH to it).
const guestLibDir = "lib/x86_64-linux-gnu"

// addPrograms adds each program to /bin with every shared library it
// needs, found by walking DT_NEEDED from it (what ldd shows), and the
// dynamic loader its PT_INTERP names.
func addPrograms(a *archive, progs []string) error {
	if len(progs) == 0 {
		return nil
	}
	files := map[string]string{} // guest path to host path
	for _, p := range progs {
		if err := needs(p, files); err != nil {
			return err
		}
		files["bin/"+filepath.Base(p)] = p
	}
	made := map[string]bool{"bin": true, "lib": true}
	for _, gp := range sortedKeys(files) {
		for _, d := range parents(gp) {
			if !made[d] {
				a.dir(d)
				made[d] = true
			}
		}
		data, err := os.ReadFile(files[gp]) // follows symbolic links
		if err != nil {
			return err
		}
		a.program(gp, data)
	}
	return nil
}

// needs adds to files the loader and the libraries the ELF file at p
// needs, and theirs.
func needs(p string, files map[string]string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("%s: its interpreter: %w", p, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		files[strings.TrimPrefix(interp, "/")] = interp
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, lib := range libs {
		gp := path.Join(guestLibDir, lib)
		if _, done := files[gp]; done {
			continue
		}
		host := findLib(lib)
		if host == "" {
			return fmt.Errorf("%s needs %s, which is in none of %s", p, lib, strings.Join(libDirs, ", "))
		}
		files[gp] = host
		if err := needs(host, files); err != nil {
			return err
		}
	}
	return nil
}

func findLib(name string) string {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// parents are a path's folders, outermost first ("a/b/c": a, a/b).
func parents(p string) []string {
	var out []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
