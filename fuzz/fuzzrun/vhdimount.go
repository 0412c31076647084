package fuzzrun

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// vhdimount is libvhdi's FUSE mount: it serves the disk (parents
// included) as the file vhdi1, which is read whole.
type vhdimount struct{ timeout time.Duration }

func (t *vhdimount) Name() string    { return "vhdimount" }
func (t *vhdimount) Version() string { return versionOf("vhdimount", "-V") }

func (t *vhdimount) Read(ctx context.Context, top, work string) Observation {
	o := Observation{Size: -1}
	mnt := filepath.Join(work, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		o.Refused, o.Why = true, err.Error()
		return o
	}
	argv := []string{"vhdimount", "-v", top, mnt} // -v: stays in the foreground, ours to stop
	o.Commands = append(o.Commands, "vhdimount -v "+top+" "+mnt)
	cmd := exec.Command(argv[0], argv[1:]...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		o.Refused, o.Why = true, err.Error()
		return o
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer t.unmount(mnt, cmd, exited)
	disk := filepath.Join(mnt, "vhdi1")
	deadline := time.Now().Add(t.timeout)
	for {
		if _, err := os.Stat(disk); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err // for unmount
			r := cmdResult{stderr: errb.Bytes(), exit: cmd.ProcessState.ExitCode()}
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.crash = "killed by signal " + ws.Signal().String()
			} else if m := sanitizer.Find(r.stderr); m != nil {
				r.crash = string(m)
			}
			if r.exit == 0 && r.crash == "" {
				r.exit = 1 // exited without mounting
			}
			o.Commands = o.Commands[:0]
			o.record(argv, r)
			return o
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			o.Hang, o.Why = true, "vhdimount did not mount within the timeout"
			return o
		}
	}
	read := []string{"cat", disk}
	r := run(ctx, t.timeout, read)
	if !o.record(read, r) {
		return o
	}
	o.Raw = r.stdout
	o.Size = int64(len(r.stdout))
	return o
}

// unmount ends the mount and the vhdimount process, whatever state they
// are in (a lazy unmount if a read still hangs in it).
func (t *vhdimount) unmount(mnt string, cmd *exec.Cmd, exited chan error) {
	exec.Command("fusermount3", "-u", mnt).Run()
	select {
	case <-exited:
		return
	case <-time.After(2 * time.Second):
	}
	exec.Command("fusermount3", "-uz", mnt).Run()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}
