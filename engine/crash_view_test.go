package engine

// One view after a crash: a process writes A and flushes, writes B into
// the same allocated block (sectors whose bitmap bits are clear) without
// flushing, and is SIGKILLed. B's data is then in the file (the page
// cache outlives the process) while its bitmap bits are not. Every view
// of the image must agree that B was never written: reads, ReadStored,
// Extents, a convert; Check must report the stray data by default, and
// once Repair has zeroed it, qemu-img, which ignores bitmaps, reads the
// same disk too.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const viewEnv = "VHDKIT_VIEW_CHILD"

const (
	viewSize  = 8 << 20
	viewBlock = 2 << 20
	viewAOff  = viewBlock + 64<<10  // A: flushed, in block 1
	viewBOff  = viewBlock + 512<<10 // B: never flushed, same block
	viewLen   = 64 << 10
)

func viewData(fill byte) []byte { return bytes.Repeat([]byte{fill, fill ^ 0x5a}, viewLen/2) }

// TestCrashViewChild is the child of TestCrashViewAfterKill and does
// nothing unless that test runs it.
func TestCrashViewChild(t *testing.T) {
	path := os.Getenv(viewEnv)
	if path == "" {
		t.Skip("the child of TestCrashViewAfterKill")
	}
	img, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(viewData('A'), viewAOff); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(viewData('B'), viewBOff); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, "written")
	time.Sleep(time.Minute) // killed long before this ends
}

func TestCrashViewAfterKill(t *testing.T) {
	if os.Getenv(viewEnv) != "" {
		t.Skip("in the child")
	}
	needTool(t, "qemu-img")
	dir := t.TempDir()
	path := filepath.Join(dir, "view.vhd")
	img, err := Create(path, CreateOptions{Type: TypeDynamic, Size: viewSize, BlockSize: viewBlock})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	killAfterWrite(t, path)
	if !fileHolds(t, path, viewData('B')) {
		t.Fatal("the scenario did not happen: B's data is not in the file")
	}

	want := make([]byte, viewSize)
	copy(want[viewAOff:], viewData('A'))
	rep, err := CheckPath(path, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Code != CodeDataUnderClearBit || !rep.Problems[0].Fixable || rep.Problems[0].Fatal {
		t.Errorf("check without options: %v; want one fixable %s warning", rep.Problems, CodeDataUnderClearBit)
	}
	engineViews(t, path, want, "before repair")

	did, err := Repair(path, RepairOptions{})
	if err != nil || len(did) != 1 {
		t.Fatalf("repair: %q, %v; want one thing done", did, err)
	}
	checkClean(t, path)
	engineViews(t, path, want, "after repair")
	if fileHolds(t, path, viewData('B')) {
		t.Error("B's data is still in the file after repair")
	}
	got, err := os.ReadFile(qemuToRaw(t, path, dir))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("qemu-img reads the repaired image differently at %d", firstDiff(got, want))
	}
}

// killAfterWrite runs the child on path and SIGKILLs it once it has
// written B.
func killAfterWrite(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashViewChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), viewEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	written := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "written" {
				written <- true
				return
			}
		}
		written <- false
	}()
	select {
	case ok := <-written:
		if !ok {
			cmd.Wait()
			t.Fatalf("child ended before writing B:\n%s", stderr.String())
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child did not write B in a minute")
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
}

// fileHolds reports whether the image file holds p anywhere.
func fileHolds(t *testing.T, path string, p []byte) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, p)
}

// engineViews checks that every way the engine reads the image shows
// want: ReadAt, ReadStored, Extents (no data where want is zero) and a
// convert to a raw file.
func engineViews(t *testing.T, path string, want []byte, when string) {
	t.Helper()
	img, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := readDisk(t, img); !bytes.Equal(got, want) {
		t.Errorf("%s: ReadAt differs at %d", when, firstDiff(got, want))
	}
	got := make([]byte, len(want))
	if err := img.ReadStored(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: ReadStored differs at %d (%v)", when, firstDiff(got, want), err)
	}
	ext, err := img.Extents(0, img.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.State == ExtentData && isZero(want[e.Off:e.Off+e.Len]) {
			t.Errorf("%s: Extents report data at %#x+%#x, where the disk holds zeros", when, e.Off, e.Len)
		}
	}
	raw := filepath.Join(t.TempDir(), "converted.raw")
	if _, err := Convert(context.Background(), path, raw, ConvertOptions{To: FormatRaw}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(raw); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: convert to raw differs at %d (%v)", when, firstDiff(got, want), err)
	}
}
