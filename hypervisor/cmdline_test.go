package hypervisor

import (
	"strings"
	"testing"
)

// TestCommandLine: the QEMU line has the machine, one NBD blockdev and
// virtio-blk device per disk on the private socket, the console and
// monitor sockets, the guest agent's port after the disks when the
// machine has it, the user's extra arguments last, and -incoming for a
// restore; values with commas are escaped for QEMU's option parser.
func TestCommandLine(t *testing.T) {
	m := machine{Type: "pc", Memory: 512 << 20, CPUs: 2, Kernel: "/boot/vmlinuz", Initrd: "/i,rd", Append: "console=ttyS0", QEMUArgs: []string{"-nic", "user"}}
	l := launch{accel: AccelTCG, dir: "/run/x,y"}
	line := strings.Join(commandLine("g", m, []attached{{export: "disk0"}, {export: "disk1", readOnly: true}}, l), " ")
	for _, want := range []string{
		"-accel tcg", "-m 512M", "-smp 2", "-machine pc", "-nodefaults",
		"-kernel /boot/vmlinuz -initrd /i,rd -append console=ttyS0",
		"-blockdev driver=nbd,node-name=vd0,server.type=unix,server.path=/run/x,,y/nbd.sock,export=disk0,read-only=off",
		"-device virtio-blk-pci,drive=vd0,id=vd0-dev ",
		"export=disk1,read-only=on",
		"-chardev socket,id=console,path=/run/x,,y/console.sock -serial chardev:console",
		"-chardev socket,id=qmp,path=/run/x,,y/qmp.sock -mon chardev=qmp,mode=control",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("the line lacks %q:\n%s", want, line)
		}
	}
	if !strings.HasSuffix(line, "-nic user") || strings.Contains(line, "-incoming") || strings.Contains(line, "bootindex") {
		t.Errorf("extra arguments not last, or -incoming/bootindex where not asked:\n%s", line)
	}
	m.Kernel, m.Initrd, m.Append = "", "", ""
	l.incoming = true
	line = strings.Join(commandLine("g", m, []attached{{export: "disk0"}}, l), " ")
	if !strings.Contains(line, "bootindex=0") || !strings.Contains(line, "-incoming defer") || strings.Contains(line, "-kernel") {
		t.Errorf("a disk boot restored:\n%s", line)
	}
	if strings.Contains(line, "virtserialport") {
		t.Errorf("a machine without the agent's port (a state saved before it) got one:\n%s", line)
	}
	m.Agent = true
	line = strings.Join(commandLine("g", m, []attached{{export: "disk0"}}, l), " ")
	port := "-chardev socket,id=agent,path=/run/x,,y/agent.sock -device virtio-serial-pci,id=agent-serial -device virtserialport,bus=agent-serial.0,chardev=agent,name=org.qemu.guest_agent.0"
	if !strings.Contains(line, "-device virtio-blk-pci,drive=vd0,id=vd0-dev,bootindex=0 "+port) || !strings.HasSuffix(line, "-incoming defer -nic user") {
		t.Errorf("the agent's port is not after the disks and before -incoming and the extra arguments:\n%s", line)
	}
	if got := displayLine("qemu", []string{"-append", "a b", "x'y"}); got != `qemu -append 'a b' 'x'\''y'` {
		t.Errorf("displayLine: %s", got)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "nothing to boot"},
		{Config{Disks: []Disk{{Path: "a.vhd"}}, Accel: "xen"}, "want auto, kvm or tcg"},
		{Config{Disks: []Disk{{Path: "a.vhd"}}, Undo: "maybe"}, "want keep, commit or discard"},
		{Config{Disks: []Disk{{Path: "a.vhd"}}, Memory: 1 << 20}, "at least 16 MiB"},
		{Config{Disks: []Disk{{Path: "a.vhd"}}, CPUs: 1000}, "1 to 255"},
		{Config{Disks: []Disk{{Path: "a.vhd"}}, Initrd: "i"}, "needs a kernel"},
		{Config{Restore: "s", Disks: []Disk{{Path: "a.vhd"}}}, "give no --disk"},
		{Config{Restore: "s", Memory: 1 << 30}, "give no --memory"},
		{Config{Restore: "s", Undo: UndoKeep}, "--undo does not apply"},
		{Config{Restore: "/nonexistent-state"}, "cannot be restored"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
	vm, err := New(Config{Disks: []Disk{{Path: "/x/My Disk.vhd"}}})
	if err != nil || vm.cfg.Name != "My Disk" {
		t.Fatalf("default name: %v %v", vm, err)
	}
}
