package hypervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"vhdkit/chains"
	"vhdkit/engine"
)

// TestUndo: with an undo policy the guest writes to an undo disk; after
// its clean poweroff discard leaves the image byte for byte as it was,
// commit lands the guest's writes in it, and keep leaves a .vud that
// 'vhd undo' (chains.Status) sees, the image unchanged.
func TestUndo(t *testing.T) {
	t.Parallel()
	for _, policy := range []Undo{UndoDiscard, UndoCommit, UndoKeep} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.vhd")
			orig := pattern(20, 1<<20)
			makeImage(t, img, engine.TypeDynamic, 32<<20, orig, 0)
			pristine := filepath.Join(dir, "pristine")
			copyFile(t, img, pristine)
			pat := pattern(21, 1<<20)
			cfg, con := guestConfig(t, writeScript("vda", 0), map[string][]byte{"pattern": pat}, Disk{Path: img})
			cfg.Undo = policy
			if err := runGuest(t, cfg); err != nil {
				t.Fatalf("run: %v\nconsole:\n%s", err, con)
			}
			st, err := chains.Status(img, chains.Options{})
			if err != nil {
				t.Fatal(err)
			}
			switch policy {
			case UndoDiscard:
				if !sameFile(t, img, pristine) || st.Exists {
					t.Fatalf("discard: image unchanged %v, undo disk left %v", sameFile(t, img, pristine), st.Exists)
				}
			case UndoCommit:
				if got := readDisk(t, img, 0, len(pat)); !bytes.Equal(got, pat) || st.Exists {
					t.Fatalf("commit: the image does not hold the guest's writes, or the undo disk is left (%v)", st.Exists)
				}
			case UndoKeep:
				if !sameFile(t, img, pristine) || !st.Exists || st.Written == 0 {
					t.Fatalf("keep: image unchanged %v, undo status %+v", sameFile(t, img, pristine), st)
				}
				if got := readDisk(t, chains.UndoPath(img), 0, len(pat)); !bytes.Equal(got, pat) {
					t.Fatal("keep: the undo disk does not read as the guest left the disk")
				}
				checkClean(t, chains.UndoPath(img))
			}
			checkClean(t, img)
			os.Remove(pristine)
		})
	}
}

func sameFile(t testing.TB, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
