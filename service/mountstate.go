package service

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Every `vhd mount` server keeps a small state file under the runtime
// folder, so `vhd umount` and the listing know what is mounted from
// which image, by which process, with which loop devices and filesystems:
//
//	$XDG_RUNTIME_DIR/vhdkit/      (or /run/vhdkit as root, or
//	  mounts/ID.json              $TMPDIR/vhdkit-UID otherwise)
//	  mounts/ID.log               the detached server's output
//
// ID is a hash of the absolute mount point. Files are written to a
// temporary name and renamed, so a reader never sees half a file. The
// folders must be this user's alone (0700) and the files regular files
// of theirs; statedir.go checks that, and says why.

// MountState is one mount's state file.
type MountState struct {
	Mountpoint string    `json:"mountpoint"`
	Image      string    `json:"image"`
	Layers     []string  `json:"layers"` // the chain, top first
	Mode       string    `json:"mode"`   // undo, no-undo or read-only
	UndoDisk   string    `json:"undo_disk,omitempty"`
	PID        int       `json:"pid"`
	Log        string    `json:"log,omitempty"`
	Started    time.Time `json:"started"`
	FS         []FSMount `json:"filesystems,omitempty"`
	// Server is "vhd serve" for a mount of a vhd serve --fuse export
	// (empty for vhd mount's own); Export and Control name the export
	// and that server's control socket. vhd umount leaves such a mount
	// to its server.
	Server  string `json:"server,omitempty"`
	Export  string `json:"export,omitempty"`
	Control string `json:"control,omitempty"`
	// Alive is filled in by the listing, not stored.
	Alive bool `json:"alive,omitempty"`
}

// Mount modes.
const (
	ModeUndo     = "undo"
	ModeNoUndo   = "no-undo"
	ModeReadOnly = "read-only"
)

// mountID names the state of the mount at the absolute path mnt.
func mountID(mnt string) string {
	h := sha256.Sum256([]byte(mnt))
	return hex.EncodeToString(h[:8])
}

func StatePath(mnt string) string { return filepath.Join(mountsDir(), mountID(mnt)+".json") }
func LogPath(mnt string) string   { return filepath.Join(mountsDir(), mountID(mnt)+".log") }

// save writes the state atomically, into the checked folder.
func (s *MountState) Save() error {
	dir, err := MountsFolder(true)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writePrivateFile(dir, filepath.Base(StatePath(s.Mountpoint)), append(b, '\n'))
}

// maxStateFile bounds what is read of a state file (a few hundred
// bytes, more with many filesystems).
const maxStateFile = 1 << 20

// LoadMountState reads the state of the mount at mnt, after checking the
// folder it is in. No folder or no file: fs.ErrNotExist.
func LoadMountState(mnt string) (*MountState, error) {
	if _, err := MountsFolder(false); err != nil {
		return nil, err
	}
	return loadState(StatePath(mnt))
}

// loadState reads a state file in a checked folder: only a regular file
// of this user's (readPrivateFile).
func loadState(path string) (*MountState, error) {
	b, err := readPrivateFile(path, maxStateFile)
	if err != nil {
		return nil, err
	}
	var s MountState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.Alive = ProcessAlive(s.PID)
	return &s, nil
}

// RemoveMountState deletes a mount's state file (and its log, which only
// matters while the server runs or right after it failed to start).
func RemoveMountState(mnt string) {
	os.Remove(StatePath(mnt))
}

// ListMounts reads every state file, dropping those whose server is gone
// and whose mount point is no longer mounted: nothing is left to clean.
// A dead server with its mount still there (ENOTCONN) stays listed, for
// `vhd umount` to clean up.
func ListMounts() ([]*MountState, error) {
	dir, err := MountsFolder(false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	mounted := FuseMounts()
	var list []*MountState
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		s, err := loadState(path)
		if err != nil {
			continue
		}
		if _, ok := mounted[s.Mountpoint]; !ok && s.Server != "" {
			continue // an export its server removed: its file goes at the server's end
		}
		if !s.Alive {
			if _, ok := mounted[s.Mountpoint]; !ok {
				os.Remove(path)
				os.Remove(strings.TrimSuffix(path, ".json") + ".log")
				continue
			}
		}
		list = append(list, s)
	}
	return list, nil
}

// ProcessAlive reports whether pid runs (a zombie does not count: it has
// released its files and locks).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := unix.Kill(pid, 0); err != nil && err != unix.EPERM {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// FuseMounts maps the mount points of vhd's FUSE mounts (fstype
// fuse.vhd) to their source, the image path.
func FuseMounts() map[string]string {
	m := map[string]string{}
	for _, e := range mountTable() {
		if e.fstype == "fuse.vhd" {
			m[e.point] = e.source
		}
	}
	return m
}

type mountEntry struct{ point, fstype, source string }

// mountTable parses /proc/self/mountinfo.
func mountTable() []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var list []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source superoptions
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 2 {
			continue
		}
		list = append(list, mountEntry{point: unescapeMount(lf[4]), fstype: rf[0], source: unescapeMount(rf[1])})
	}
	return list
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsMounted reports whether path is a mount point.
func IsMounted(path string) bool {
	for _, e := range mountTable() {
		if e.point == path {
			return true
		}
	}
	return false
}
