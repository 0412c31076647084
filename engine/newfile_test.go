package engine

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckNewFileFolder: a new file's folder that is missing, is a
// file, or cannot be written is named, with what to do; a path that
// exists or a good folder passes.
func TestCheckNewFileFolder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		path, says string
		is         error
	}{
		{filepath.Join(dir, "nodir", "x.vhd"), "folder " + filepath.Join(dir, "nodir") + " does not exist: create it first, or choose another place for x.vhd", fs.ErrNotExist},
		{filepath.Join(dir, "nodir", "deeper", "x.vhd"), "folder " + filepath.Join(dir, "nodir", "deeper") + " does not exist", fs.ErrNotExist},
		{filepath.Join(file, "x.vhd"), file + " is not a folder: choose another place for x.vhd", unix.ENOTDIR},
		{filepath.Join(file, "sub", "x.vhd"), file + " is not a folder", unix.ENOTDIR},
		{filepath.Join(dir, "x.vhd"), "", nil},
		{file, "", nil},
	} {
		err := CheckNewFileFolder(tc.path)
		var fe *FolderError
		switch {
		case tc.is == nil && err != nil:
			t.Errorf("%s: %v, want no error", tc.path, err)
		case tc.is != nil && (!errors.As(err, &fe) || !errors.Is(err, tc.is) || !strings.HasPrefix(err.Error(), tc.says)):
			t.Errorf("%s: %v, want %q (%v)", tc.path, err, tc.says, tc.is)
		}
	}
	if _, err := Create(filepath.Join(dir, "nodir", "x.vhd"), CreateOptions{Type: TypeDynamic, Size: 1 << 20}); !errors.As(err, new(*FolderError)) {
		t.Errorf("Create in a missing folder: %v, want a FolderError", err)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root, who writes any folder: the not-writable case is not tested here")
		return
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o555)
	if err := CheckNewFileFolder(filepath.Join(ro, "x.vhd")); !errors.Is(err, fs.ErrPermission) || !strings.HasPrefix(err.Error(), "folder "+ro+" is not writable") {
		t.Errorf("a read-only folder: %v", err)
	}
}
