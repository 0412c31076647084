package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// vhdBin is the binary under test, built once by TestMain. The tests
// drive it as a user (or a script) would: arguments in, output and exit
// status out.
var vhdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vhd-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vhdBin = filepath.Join(dir, "vhd")
	if out, err := exec.Command("go", "build", "-o", vhdBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// vhd runs the binary with args.
func vhd(t testing.TB, args ...string) result {
	t.Helper()
	cmd := exec.Command(vhdBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run vhd %v: %v", args, err)
	}
	return r
}

// vhdCode runs vhd and fails the test unless it exits with code.
func vhdCode(t testing.TB, code int, args ...string) result {
	t.Helper()
	r := vhd(t, args...)
	if r.code != code {
		t.Fatalf("vhd %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// vhdOK runs vhd and fails the test unless it succeeds.
func vhdOK(t testing.TB, args ...string) result {
	t.Helper()
	return vhdCode(t, 0, args...)
}

// checkOK ends every test that writes an image: vhd check (bitmaps
// included) must find nothing.
func checkOK(t testing.TB, path string) {
	t.Helper()
	vhdOK(t, "check", "--bitmaps", path)
}

func vhdJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	vhdJSONCode(t, 0, v, args...)
}

// vhdJSONCode is vhdJSON of a command that must end with exit status code.
func vhdJSONCode(t testing.TB, code int, v any, args ...string) {
	t.Helper()
	r := vhdCode(t, code, args...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("vhd %v: output is not JSON: %v\n%s", args, err, r.stdout)
	}
}

// qemuImg runs qemu-img (qemu-utils is a test dependency; see
// scripts/setup.sh).
func qemuImg(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func qemuVirtualSize(t testing.TB, path, format string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	out := qemuImg(t, "info", "-f", format, "--output=json", path)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	return info.VirtualSize
}

func TestHelpAndUsage(t *testing.T) {
	r := vhdOK(t, "help")
	for _, c := range []string{"info", "create", "check", "repair", "convert", "version", "help", "Exit status"} {
		if !strings.Contains(r.stdout, c) {
			t.Errorf("vhd help does not mention %q:\n%s", c, r.stdout)
		}
	}
	if r := vhdOK(t, "--help"); !strings.Contains(r.stdout, "Commands:") {
		t.Errorf("vhd --help:\n%s", r)
	}
	for _, args := range [][]string{{"help", "convert"}, {"convert", "--help"}, {"convert", "-h"}} {
		r := vhdOK(t, args...)
		for _, f := range []string{"--to", "--block-size", "--align", "--force", "--no-progress", "power of 1024"} {
			if !strings.Contains(r.stdout, f) {
				t.Errorf("vhd %v does not document %s:\n%s", args, f, r.stdout)
			}
		}
	}
	for _, c := range commands {
		if r := vhdOK(t, c.name, "--help"); !strings.Contains(r.stdout, "Usage: vhd "+c.name) {
			t.Errorf("vhd %s --help:\n%s", c.name, r)
		}
	}
	if r := vhdOK(t, "version"); !strings.HasPrefix(r.stdout, "vhd ") {
		t.Errorf("vhd version: %s", r)
	}
	var v map[string]string
	vhdJSON(t, &v, "version", "--json")
	if v["version"] == "" || v["go"] == "" {
		t.Errorf("vhd version --json: %v", v)
	}

	// Usage errors exit 2 and say how to get help.
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"help", "frobnicate"},
		{"info"},
		{"info", "a", "b"},
		{"info", "--bogus", "x"},
		{"create", "x.vhd"},
		{"create", "--size", "10X", "x.vhd"},
		{"create", "--size", "1000", "x.vhd"},
		{"create", "--size", "3T", "x.vhd"},
		{"create", "--type", "sparse", "--size", "1M", "x.vhd"},
		{"create", "--type", "fixed", "--block-size", "1M", "--size", "1M", "x.vhd"},
		{"convert", "a", "b"},
		{"convert", "--to", "qcow2", "a", "b"},
		{"convert", "--to", "raw", "--block-size", "1M", "a", "b"},
		{"convert", "--to", "fixed", "--align", "1000", "a", "b"},
		{"convert", "--to", "raw", "a"},
	} {
		r := vhd(t, args...)
		if r.code != 2 {
			t.Errorf("vhd %v: want exit 2, got %s", args, r)
		}
		if len(args) > 0 && !strings.Contains(r.stderr, "vhd help") {
			t.Errorf("vhd %v: usage error does not point at help:\n%s", args, r.stderr)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "0": 0, "10K": 10 << 10, "10k": 10 << 10, "10KB": 10 << 10, "10KiB": 10 << 10,
		"10G": 10 << 30, "10GB": 10 << 30, "10GiB": 10 << 30, "10 G": 10 << 30, "1.5T": 3 << 39,
		"1.5TB": 3 << 39, "2M": 2 << 20, "512B": 512, "1P": 1 << 50,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "1.5", "10X", "10GG", "1e3", "10 GiBs", "99999999999P"} {
		if n, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, n)
		}
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
