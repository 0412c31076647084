// Package blktap runs Xen's blktap tools, the real peer the interop
// tests compare vhdkit with: vhd-util (create, snapshot, coalesce,
// modify, resize, fill, check, read) and tapwrite, which writes through
// libvhd the way tapdisk does. Static builds of both live in
// ../shared/peers/blktap beside the repository (their README says how
// they were built); VHDKIT_BLKTAP names another folder. Tests only: on a
// machine without them, Dir skips the test and says why.
package blktap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Env names the environment variable that points at the peer's folder.
const Env = "VHDKIT_BLKTAP"

// Dir returns the folder holding vhd-util and tapwrite, or skips the test
// when there is none: VHDKIT_BLKTAP, else shared/peers/blktap beside the
// repository or beside any folder above it (a worktree two levels down
// finds the same one).
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := find()
	if err != nil {
		t.Skipf("Xen's blktap tools are not here, so this interop test cannot run: %v", err)
	}
	return dir
}

func find() (string, error) {
	if d := os.Getenv(Env); d != "" {
		if usable(d) {
			return d, nil
		}
		return "", fmt.Errorf("%s=%s holds no vhd-util and tapwrite", Env, d)
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot tell where the repository is")
	}
	for dir := filepath.Dir(filepath.Dir(filepath.Dir(file))); ; dir = filepath.Dir(dir) {
		cand := filepath.Join(filepath.Dir(dir), "shared", "peers", "blktap")
		if usable(cand) {
			return cand, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no shared/peers/blktap beside the repository or a folder above it, and %s is not set", Env)
		}
	}
}

func usable(dir string) bool {
	for _, name := range []string{"vhd-util", "tapwrite"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Run runs a blktap tool and returns its output and error; Util and
// Write fail the test instead.
func Run(t testing.TB, tool string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(Dir(t), tool), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s%s", tool, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// Util runs vhd-util and returns what it printed; a failure fails the
// test.
func Util(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := Run(t, "vhd-util", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Check runs vhd-util check on one image and fails the test unless the
// image is valid in blktap's eyes.
func Check(t testing.TB, path string) {
	t.Helper()
	if err := CheckErr(t, path); err != nil {
		t.Fatal(err)
	}
}

// CheckErr is Check returning what vhd-util said instead.
func CheckErr(t testing.TB, path string) error {
	t.Helper()
	out, err := Run(t, "vhd-util", "check", "-n", path)
	if err == nil && !bytes.Contains(out, []byte("is valid")) {
		err = fmt.Errorf("vhd-util check -n %s: %s", path, out)
	}
	return err
}

// Read returns blktap's view of the first size bytes of the image at
// path, through its chain (vhd-util read), size a multiple of 512.
func Read(t testing.TB, path string, size int64) []byte {
	t.Helper()
	out := Util(t, "read", "-n", path, "-r", "0", "-c", fmt.Sprint(size/512))
	if int64(len(out)) != size {
		t.Fatalf("vhd-util read -n %s: %d bytes, want %d", path, len(out), size)
	}
	return out
}

// Write writes data at off of the image at path through libvhd, as
// tapdisk does (tapwrite).
func Write(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "tapwrite")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(t, "tapwrite", path, fmt.Sprint(off), f.Name()); err != nil {
		t.Fatal(err)
	}
}
