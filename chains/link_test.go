package chains

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// TestParentNotFoundPointsAtMovedParent: a parent renamed beside its
// child (a decoy with another UUID taking its old name) and one moved
// into a subfolder. Open's error is one line that says what each place
// held and names the renamed parent, which a scan finds in the subfolder
// too; re-linking to it mends the chain. Before, the error was several
// lines and said only "re-link it with vhd set-parent CHILD PARENT",
// and the scan's broken reason ended in a bare "tried:".
func TestParentNotFoundPointsAtMovedParent(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 2, 4<<20, 11)
	renamed := filepath.Join(dir, "renamed.vhd")
	if err := os.Rename(paths[0], renamed); err != nil {
		t.Fatal(err)
	}
	decoy, err := engine.Create(paths[0], engine.CreateOptions{Type: engine.TypeDynamic, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	decoy.Close()

	nf := openNotFound(t, paths[1])
	if nf.Found != renamed {
		t.Errorf("found %q, want %s", nf.Found, renamed)
	}
	msg := nf.Error()
	for _, want := range []string{"UUID " + decoyUUID(t, paths[0]) + ", the child expects", "set-parent " + paths[1] + " " + renamed} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") || strings.Count(msg, paths[0]) != 1 {
		t.Errorf("error is not one line naming the decoy once: %q", msg)
	}

	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	deeper := filepath.Join(sub, "moved.vhd")
	if err := os.Rename(renamed, deeper); err != nil {
		t.Fatal(err)
	}
	if nf := openNotFound(t, paths[1]); nf.Found != "" {
		t.Errorf("open looked into subfolders: found %s", nf.Found)
	}
	n := scanNode(t, dir, paths[1])
	if n.Broken != ErrParentNotFound.Error() || len(n.Tried) != 1 || n.Found != deeper {
		t.Errorf("scanned child: broken %q, tried %q, found %q; want parent not found, one place tried, found %s", n.Broken, n.Tried, n.Found, deeper)
	}
	if err := SetParent(paths[1], deeper, SetParentOptions{}); err != nil {
		t.Fatal(err)
	}
	openVerify(t, paths[1], model, Options{})
	checkClean(t, paths[1], deeper, paths[0])
}

// TestScanBrokenReasonSaysItOnce: a link broken by confinement is told
// in one line that neither repeats the child's path nor the kind of
// break. Before, it read "parent locator leads outside the allowed
// folders: CHILD: W2ru locator ...: parent locator leads outside...".
func TestScanBrokenReasonSaysItOnce(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 2, 1<<20, 12)
	allowed := t.TempDir()
	roots, err := Scan([]string{dir}, Options{ParentDirs: []string{allowed}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range roots {
		if n.Path != paths[1] {
			continue
		}
		if strings.Count(n.Broken, ErrOutsideAllowed.Error()) != 1 || strings.Contains(n.Broken, paths[1]) {
			t.Errorf("broken reason %q: want the kind once and not the child's path", n.Broken)
		}
		return
	}
	t.Fatalf("child %s not a root", paths[1])
}

func openNotFound(t *testing.T, path string) *ParentNotFoundError {
	t.Helper()
	_, err := Open(path, Options{ReadOnly: true})
	var nf *ParentNotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, ErrParentNotFound) {
		t.Fatalf("open %s: %v, want a ParentNotFoundError", path, err)
	}
	return nf
}

func decoyUUID(t *testing.T, path string) string {
	t.Helper()
	img, err := engine.Open(path, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return img.Footer().UUID.String()
}

func scanNode(t *testing.T, dir, path string) *Node {
	t.Helper()
	roots, err := Scan([]string{dir}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range roots {
		if n.Path == path {
			return n
		}
	}
	t.Fatalf("%s is not a root of the scan", path)
	return nil
}
