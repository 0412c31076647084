package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestMutatingJSON: the commands that change images say what they did
// as JSON with --json, for scripts: snapshot, set-parent, resize (grown,
// and --to-minimum with nothing to do), reset-id and repair (of a
// damaged footer copy). Each JSON says what the image then is.
func TestMutatingJSON(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "top.vhd")
	vhdOK(t, "create", "--size", "8M", base)

	var snap struct {
		Image, Top string
		TopUUID    string `json:"top_uuid"`
		Depth      int
	}
	vhdJSON(t, &snap, "snapshot", "--json", base, top)
	var info struct{ UUID string }
	vhdJSON(t, &info, "info", "--json", top)
	if snap.Image != base || snap.Top != top || snap.Depth != 2 || snap.TopUUID != info.UUID {
		t.Errorf("snapshot --json: %+v (top's UUID %s)", snap, info.UUID)
	}

	moved := filepath.Join(dir, "moved.vhd")
	if err := os.Rename(base, moved); err != nil {
		t.Fatal(err)
	}
	var link map[string]any
	vhdJSON(t, &link, "set-parent", "--json", top, moved)
	if link["child"] != top || link["parent"] != moved {
		t.Errorf("set-parent --json: %v", link)
	}

	solo := filepath.Join(dir, "solo.vhd")
	vhdOK(t, "create", "--size", "8M", solo)
	var rs struct {
		Image   string
		Size    int64
		OldSize int64 `json:"old_size"`
		Changed bool
	}
	vhdJSON(t, &rs, "resize", "--json", "--size", "+8M", solo)
	if rs.Image != solo || rs.Size != 16<<20 || rs.OldSize != 8<<20 || !rs.Changed {
		t.Errorf("resize --json: %+v", rs)
	}

	var id struct {
		UUID    string
		OldUUID string `json:"old_uuid"`
		Changed bool
		CutOff  []string `json:"cut_off"`
	}
	vhdJSON(t, &info, "info", "--json", solo)
	old := info.UUID
	vhdJSON(t, &id, "reset-id", "--json", solo)
	vhdJSON(t, &info, "info", "--json", solo)
	if id.OldUUID != old || id.UUID != info.UUID || id.UUID == old || !id.Changed || id.CutOff == nil || len(id.CutOff) != 0 {
		t.Errorf("reset-id --json: %+v (was %s, now %s)", id, old, info.UUID)
	}

	flipByte(t, solo, 0) // the footer copy at offset 0
	var rep struct {
		File     string
		Repaired []string
		Left     []any
	}
	vhdJSON(t, &rep, "repair", "--json", solo)
	if rep.File != solo || len(rep.Repaired) != 1 || rep.Left == nil || len(rep.Left) != 0 {
		t.Errorf("repair --json: %+v", rep)
	}
	vhdJSON(t, &rep, "repair", "--json", solo)
	if rep.Repaired == nil || len(rep.Repaired) != 0 {
		t.Errorf("repair --json of a sound image: %+v, want repaired []", rep)
	}

	// Refused (a block past the end of the file): the JSON says why and
	// lists the damage, and nothing changes.
	cut := filepath.Join(dir, "cut.vhd")
	vhdOK(t, "create", "--size", "8M", cut)
	writeChain(t, cut, bytes.Repeat([]byte{3}, 4<<20), 0)
	st, _ := os.Stat(cut)
	os.Truncate(cut, st.Size()-1<<20)
	var refused struct {
		Repaired []string
		Left     []struct{ Code string }
		Refused  string
	}
	vhdJSONCode(t, exitFailed, &refused, "repair", "--json", cut)
	if refused.Refused == "" || len(refused.Repaired) != 0 || len(refused.Left) == 0 || refused.Left[len(refused.Left)-1].Code != "bat-out-of-range" {
		t.Errorf("repair --json of damage it cannot fix: %+v", refused)
	}
	checkOK(t, solo)
	checkOK(t, top)
}

// TestUmountJSON: umount --json says, for each mount, what became of its
// undo disk: committed (with the bytes), removed when nothing was
// written, none for a --no-undo mount, kept otherwise; with --all and
// nothing mounted, an empty list.
func TestUmountJSON(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.vhd"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	vhdOK(t, "create", "--size", "8M", img)
	type done struct {
		Mountpoint string `json:"mount_point"`
		Image      string
		Undo       string
		UndoDisk   string `json:"undo_disk"`
		Copied     int64  `json:"committed_bytes"`
	}
	umount := func(args ...string) []done {
		var d []done
		vhdJSON(t, &d, append([]string{"umount", "--json"}, args...)...)
		return d
	}
	write := func() {
		f, err := os.OpenFile(filepath.Join(mnt, "disk"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{5}, 65536), 1<<20); err != nil {
			t.Fatal(err)
		}
	}

	mountImage(t, img, mnt)
	write()
	if d := umount("--commit", mnt); len(d) != 1 || d[0].Undo != "committed" || d[0].Copied < 65536 || d[0].Mountpoint != mnt || d[0].Image != img {
		t.Errorf("umount --commit --json: %+v", d)
	}
	mountImage(t, img, mnt)
	if d := umount(mnt); len(d) != 1 || d[0].Undo != "removed" {
		t.Errorf("umount --json of a mount nothing wrote: %+v", d)
	}
	mountImage(t, img, mnt)
	write()
	if d := umount(img); len(d) != 1 || d[0].Undo != "kept" || d[0].UndoDisk == "" {
		t.Errorf("umount --json IMAGE with changes: %+v", d)
	}
	vhdOK(t, "undo", "discard", img)
	mountImage(t, "--no-undo", img, mnt)
	if d := umount(mnt); len(d) != 1 || d[0].Undo != "none" {
		t.Errorf("umount --json of a --no-undo mount: %+v", d)
	}
	if d := umount("--all"); d == nil || len(d) != 0 {
		t.Errorf("umount --all --json with nothing mounted: %+v", d)
	}
	checkOK(t, img)
}
