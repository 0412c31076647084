package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Serving in the background (vhd serve --fork, as qemu-nbd --fork): the
// command starts itself again with StartBackground, the server sends
// what the foreground would have printed once it listens, and the first
// process prints it and exits. The server's output goes to a log under
// the private folder, in logs/, which the server removes when it stops
// cleanly: only the log of a server that failed or was killed stays, and
// old ones go (pruneLogs).

func logsDir() string { return filepath.Join(RuntimeDir(), "logs") }

// ServerLog makes logs/ (private, checked) and names a fresh log in it
// for a server of kind ("serve", "run").
func ServerLog(kind string) (string, error) {
	for _, d := range []string{RuntimeDir(), logsDir()} {
		if err := privateDir(d); err != nil {
			return "", err
		}
	}
	pruneLogs(logsDir(), keepLogs, keepLogsFor)
	var rnd [6]byte
	rand.Read(rnd[:])
	return filepath.Join(logsDir(), kind+"-"+hex.EncodeToString(rnd[:])+".log"), nil
}

// The logs that stay (of servers that failed or were killed) are kept
// while they are among the newest keepLogs or younger than keepLogsFor:
// enough to read what went wrong, without a folder that grows for ever.
// A running server writes its log, which keeps it young.
const (
	keepLogs    = 20
	keepLogsFor = 7 * 24 * time.Hour
)

// pruneLogs removes the .log files of dir beyond the newest keep that
// were last written more than age ago.
func pruneLogs(dir string, keep int, age time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type log struct {
		path string
		mod  time.Time
	}
	var logs []log
	for _, e := range ents {
		if info, err := e.Info(); err == nil && e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".log") {
			logs = append(logs, log{filepath.Join(dir, e.Name()), info.ModTime()})
		}
	}
	slices.SortFunc(logs, func(a, b log) int { return b.mod.Compare(a.mod) })
	for i, l := range logs {
		if i >= keep && time.Since(l.mod) > age {
			os.Remove(l.path)
		}
	}
}

// Announcement is what a server started in the background sends its
// starter once it is ready: the lines the foreground prints (URIs,
// fuse:DIR, control:PATH), its pid and its log.
type Announcement struct {
	Lines []string `json:"lines"`
	PID   int      `json:"pid"`
	Log   string   `json:"log"`
}

// StartServer starts args (this program's command line after its name,
// serving in the foreground and reporting on ReadyFD) in the background
// with its output in log, and returns its announcement.
func StartServer(ctx context.Context, what string, args []string, log string) (Announcement, error) {
	var a Announcement
	err := StartBackground(ctx, Background{What: what, Args: args, Log: log}, &a)
	if err != nil && !strings.Contains(err.Error(), log) {
		// Its end is in err; an error that names the log keeps it.
		os.Remove(log)
	}
	return a, err
}

// WritePIDFile writes this process's pid to path, atomically (a reader
// sees no file or the whole pid), readable by all as pid files are.
func WritePIDFile(path string) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// RemovePIDFile removes path if it still names this process (another
// server may have taken the name since).
func RemovePIDFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

// RemoveOwnLog removes the log of a server that stops cleanly, if it is
// one ServerLog named (never a file elsewhere).
func RemoveOwnLog(path string) error {
	if filepath.Dir(path) != logsDir() {
		return errors.New("not a server log: " + path)
	}
	return os.Remove(path)
}
