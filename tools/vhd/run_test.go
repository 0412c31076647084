package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vhdkit/hypervisor/testguest"
)

// TestRunUsage: vhd run's help, its dry run (the QEMU line, with the
// extra arguments last) and its usage errors.
func TestRunUsage(t *testing.T) {
	r := vhdOK(t, "help", "run")
	for _, f := range []string{"--disk", "--kernel", "--initrd", "--append", "--memory", "--cpus", "--accel", "--console", "--undo", "--name", "--qemu-arg", "--restore", "--dry-run", "--control", "control:PATH", "org.qemu.guest_agent.0", "ACPI"} {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("vhd help run does not mention %s", f)
		}
	}
	r = vhdOK(t, "run", "--dry-run", "--accel", "tcg", "--disk", "a.vhd", "--disk", "b.vhd:ro", "--memory", "1G", "--cpus", "2", "--qemu-arg=-nic", "--qemu-arg=user")
	for _, want := range []string{"qemu-system-x86_64 ", "-accel tcg", "-m 1024M", "-smp 2", "export=disk0,read-only=off", "export=disk1,read-only=on", "bootindex=0",
		"-device virtserialport,bus=agent-serial.0,chardev=agent,name=org.qemu.guest_agent.0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(r.stdout), "-nic user") {
		t.Errorf("--qemu-arg is not last:\n%s", r.stdout)
	}
	for _, args := range [][]string{
		{"run"},
		{"run", "--accel", "xen", "--disk", "a.vhd"},
		{"run", "--undo", "maybe", "--disk", "a.vhd"},
		{"run", "--memory", "1X", "--disk", "a.vhd"},
		{"run", "--initrd", "i", "--disk", "a.vhd"},
		{"run", "--restore", "s", "--disk", "a.vhd"},
		{"run", "a.vhd"},
	} {
		if r := vhd(t, args...); r.code != 2 || !strings.Contains(r.stderr, "vhd help run") {
			t.Errorf("vhd %v: want a usage error, got %s", args, r)
		}
	}
	if r := vhd(t, "run", "--restore", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, "cannot be restored") {
		t.Errorf("a folder with no state: %s", r)
	}
}

// TestRunGuestCLI: vhd run boots a guest that writes its disk through
// an undo disk; 'vhd ctl PATH undo commit disk0' lands the write in the
// image while the guest runs; SIGTERM presses its power button, it
// powers off, and vhd run exits 0 with the console on its standard
// output. --undo keep leaves the .vud, holding the guest's writes after
// the commit, that 'vhd undo status' shows, and the image checks clean.
func TestRunGuestCLI(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.vhd")
	vhdOK(t, "create", "--size", "32M", img)
	kernel, initrd, err := testguest.Build(dir, "echo hello | dd of=/dev/vda conv=fsync 2>/dev/null\necho GUEST-READY\n"+
		"while sleep 1; do echo again | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null; done\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "run.ctl")
	cmd := exec.Command(vhdBin, "run", "--disk", img, "--kernel", kernel, "--initrd", initrd, "--append", testguest.Append,
		"--accel", "tcg", "--memory", "256M", "--undo", "keep", "--qemu-arg=-no-reboot", "--control", ctl)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ready := make(chan string, 1)
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "GUEST-READY") {
				ready <- all.String()
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(4 * time.Minute):
		t.Fatalf("the guest did not get ready; stderr:\n%s", errb.String())
	}
	// The guest's write is on the undo disk; a live undo commit over
	// the control socket lands it in the image while the guest runs.
	if st := vhdOK(t, "ctl", ctl, "status").stdout; !strings.Contains(st, "on an undo disk") {
		t.Errorf("the guest's disk is not shown on its undo disk:\n%s", st)
	}
	vhdOK(t, "ctl", ctl, "undo", "commit", "--no-progress", "disk0")
	// The guest writes on, into the fresh undo disk: --undo keep keeps
	// it (an undo disk left empty would be removed).
	for i := 0; !strings.Contains(vhdOK(t, "undo", "status", img).stdout, "of changes"); i++ {
		if i == 600 {
			t.Fatal("the guest's writes after the commit did not reach the fresh undo disk in 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("vhd run did not end after SIGTERM; stderr:\n%s", errb.String())
	}
	if err != nil {
		t.Fatalf("vhd run: %v; stderr:\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "running under tcg") {
		t.Errorf("vhd run did not say what runs the guest:\n%s", errb.String())
	}
	if got := readImage(t, img, 0, 6); string(got) != "hello\n" {
		t.Errorf("the image does not hold what the undo commit landed: %q", got)
	}
	r := vhdOK(t, "undo", "status", img)
	if !strings.Contains(r.stdout, ".vud") {
		t.Errorf("vhd undo status does not show the kept undo disk:\n%s", r)
	}
	checkOK(t, img)
	checkOK(t, strings.TrimSuffix(img, ".vhd")+".vud")
}
