package hypervisor

import (
	"fmt"
	"path/filepath"
	"strings"
)

// launch is one start of QEMU: the accelerator, the private folder of
// its sockets, and whether it waits for a saved state (-incoming).
type launch struct {
	accel    Accel // AccelKVM or AccelTCG
	dir      string
	incoming bool
	agent    bool // the machine has the agent's port: listen for it
}

// The sockets in the private folder. QEMU connects to each as a client
// (the runner listens before starting it), so no one can race QEMU to a
// socket, and nothing waits for a file to appear.
func (l launch) nbdSocket() string     { return filepath.Join(l.dir, "nbd.sock") }
func (l launch) qmpSocket() string     { return filepath.Join(l.dir, "qmp.sock") }
func (l launch) consoleSocket() string { return filepath.Join(l.dir, "console.sock") }
func (l launch) agentSocket() string   { return filepath.Join(l.dir, "agent.sock") }

// AgentPort is the name of the virtio-serial port every guest gets for
// qemu-guest-agent (its default: /dev/virtio-ports/org.qemu.guest_agent.0
// in a Linux guest with udev).
const AgentPort = "org.qemu.guest_agent.0"

// machine is what a saved state must be restored with: everything that
// shapes the guest's hardware and memory. The manifest records it
// (state.go), and commandLine builds the same machine from it.
type machine struct {
	// Type is QEMU's machine type, pinned to a version on save (pc is an
	// alias that a newer QEMU moves).
	Type     string   `json:"type"`
	Memory   int64    `json:"memory_bytes"`
	CPUs     int      `json:"cpus"`
	Kernel   string   `json:"kernel,omitempty"`
	Initrd   string   `json:"initrd,omitempty"`
	Append   string   `json:"append,omitempty"`
	QEMUArgs []string `json:"qemu_args,omitempty"`
	// Agent: the machine has the guest agent's virtio-serial port
	// (AgentPort). Every run since this port came has it; a state saved
	// before has not, and is restored without it, as it was saved.
	Agent bool `json:"agent_channel,omitempty"`
}

// attached is a disk as QEMU sees it: an NBD export and a virtio-blk
// device in order.
type attached struct {
	export   string
	readOnly bool
}

// exportName is the NBD export of the disk at index i.
func exportName(i int) string { return fmt.Sprintf("disk%d", i) }

// commandLine is QEMU's arguments (without the program) for machine m
// with disks, started as l says. It is a pure function: --dry-run shows
// exactly what Run starts.
func commandLine(name string, m machine, disks []attached, l launch) []string {
	args := []string{
		"-name", optValue(name),
		// No default devices (VGA, NIC, CD-ROM, floppy) and no config
		// file: the machine is what this line says, and a restore
		// builds the same one.
		"-nodefaults", "-no-user-config",
		"-machine", m.Type,
		"-accel", string(l.accel),
		"-m", fmt.Sprintf("%dM", m.Memory>>20),
		"-smp", fmt.Sprint(m.CPUs),
		"-display", "none",
		"-chardev", "socket,id=console,path=" + optValue(l.consoleSocket()),
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,path=" + optValue(l.qmpSocket()),
		"-mon", "chardev=qmp,mode=control",
	}
	if m.Kernel != "" {
		args = append(args, "-kernel", m.Kernel)
		if m.Initrd != "" {
			args = append(args, "-initrd", m.Initrd)
		}
		if m.Append != "" {
			args = append(args, "-append", m.Append)
		}
	}
	for i, d := range disks {
		node := fmt.Sprintf("vd%d", i)
		ro := "off"
		if d.readOnly {
			ro = "on"
		}
		// The guest's flushes reach the server as NBD FLUSH (QEMU's NBD
		// client drops them if the server does not offer FLUSH; ours
		// does), so a guest's fsync is durable in the image.
		args = append(args,
			"-blockdev", fmt.Sprintf("driver=nbd,node-name=%s,server.type=unix,server.path=%s,export=%s,read-only=%s",
				node, optValue(l.nbdSocket()), d.export, ro),
			"-device", deviceArg(node, i, m.Kernel == ""))
	}
	if m.Agent {
		// After the disks, so their PCI slots are the ones a machine
		// without the port gives them.
		args = append(args,
			"-chardev", "socket,id=agent,path="+optValue(l.agentSocket()),
			"-device", "virtio-serial-pci,id=agent-serial",
			"-device", "virtserialport,bus=agent-serial.0,chardev=agent,name="+AgentPort)
	}
	if l.incoming {
		// The state is loaded with migrate-incoming once QMP is up, and
		// the guest started with cont (restore.go).
		args = append(args, "-incoming", "defer")
	}
	return append(args, m.QEMUArgs...)
}

// deviceArg attaches node as a virtio-blk disk; without a kernel the
// first disk is the one the firmware boots.
func deviceArg(node string, i int, bootFromDisk bool) string {
	dev := fmt.Sprintf("virtio-blk-pci,drive=%s,id=%s-dev", node, node)
	if bootFromDisk && i == 0 {
		dev += ",bootindex=0"
	}
	return dev
}

// optValue escapes a value inside a QEMU option string, where a comma
// separates options and ",," stands for a comma.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// shellQuote quotes s for /bin/sh, for migrate's exec: URIs.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// displayLine shows a command line the way a shell would take it back.
func displayLine(prog string, args []string) string {
	parts := []string{prog}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = shellQuote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
