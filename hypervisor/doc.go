// Package hypervisor runs guests on vhdkit disks: `vhd run`. Each disk
// is opened as a live chain (chains) and served in-process over NBD on a
// private unix socket, QEMU is attached to the exports with virtio-blk,
// and the guest's serial console is carried to the user. A running
// guest, an offline mount and a backup so share one disk layer.
//
// # A run
//
//	vm, err := hypervisor.New(hypervisor.Config{Disks: ..., Kernel: ...})
//	err = vm.Run(ctx)   // nil: the guest powered off cleanly
//
// Run makes a private folder (mode 0700, in $TMPDIR) for four sockets:
// nbd.sock (the disks: exports disk0, disk1... in attachment order),
// qmp.sock (QEMU's monitor), console.sock (the serial port) and
// agent.sock (the guest agent's port, AgentPort). The runner listens on
// all of them before QEMU starts, and QEMU connects to them as a client,
// so nothing races QEMU to a socket and nothing polls for a file to
// appear. QEMU runs with -nodefaults (no VGA, NIC, CD-ROM
// or floppy: the machine is what the command line says, which a restore
// needs), in its own process group, and is killed if the runner dies.
// VM.CommandLine shows the line (vhd run --dry-run); Config.QEMUArgs
// extend it.
//
// # What the runner guarantees
//
//   - A guest's flush is durable: its fsync reaches the server as NBD
//     FLUSH (the server offers FLUSH; QEMU silently drops flushes to a
//     server that does not), which is Chain.Flush. A QEMU killed right
//     after the guest's fsync returned leaves the data in the image.
//   - However QEMU ends (poweroff, crash, kill, the powerdown timeout),
//     the disks are flushed and closed before Run returns, so their
//     locks are released; Run says how QEMU ended, with its last words.
//   - Run returns nil only for a guest that powered off (QEMU's
//     SHUTDOWN event with reason guest-shutdown, and exit status 0).
//   - When ctx ends (SIGINT, SIGTERM), the guest gets an ACPI powerdown
//     and Config.PowerdownTimeout to power off; then QEMU is told to
//     quit, as a power cut would (ErrPowerdownTimeout).
//
// # Accelerators
//
// KVM where it works, TCG where it does not (accel.go): /dev/kvm must
// open and answer, and then the guest must print on its serial console
// within Config.ProbeTimeout under KVM. Nested KVM can initialise and
// then hang the guest before it prints anything (as on this project's
// machines), which QEMU's own `-accel kvm -accel tcg` does not notice.
// AccelAuto then restarts the guest under TCG and says why; AccelKVM
// fails with ErrKVM. A guest that prints nothing on its serial console
// (no console=ttyS0, a boot loader without serial output) cannot show
// life: run it with AccelTCG, or AccelKVM only where KVM is known to
// work.
//
// # Undo disks
//
// With an undo policy (Virtual Server's), every writable disk runs on an
// undo disk (IMAGE.vud, chains.OpenUndo); the image is not written
// during the run. After a clean poweroff, commit merges the undo disks
// and discard deletes them; keep leaves them for 'vhd undo'. A run that
// ends any other way keeps them whatever the policy, saying so.
//
// # Verbs on a running guest
//
// Status, Pause, Resume, Powerdown, Reset and Save are methods of VM,
// each a thin call over QMP or the live chain. Chain gives a disk's live
// chain (Snapshot, View, Merge while the guest writes), ExportLayer
// serves a read-only view of a frozen layer on the run's NBD socket (a
// backup's point), and Host is the service host serving the disks.
//
// With Config.Control the run serves a control socket (the service
// host's, control_socket.go): every `vhd ctl` verb on the disks'
// exports (snapshot, merge, undo commit and discard, add --view-of for a
// backup; exports added are served on the run's NBD socket, which its
// owner, the only user the control socket answers, can reach), and the
// /v1/vm routes, which map onto the verbs above one to one
// (`vhd ctl PATH vm status|pause|resume|powerdown|reset|save STATE`).
// A guest's own disk is not removed over it.
//
// # The guest agent
//
// Every guest gets a virtio-serial port named AgentPort (as QEMU's
// documentation names it, so a guest's qemu-guest-agent finds it with no
// setting) whose host end the runner holds for the whole run
// (guestagent speaks the protocol). VM.Freeze is the host's
// service.Quiescer (set at Run): before a backup cuts a point of one of
// the guest's disks, it freezes the guest's filesystems when the agent
// answers a ping within 2 s, and returns the thaw; with no agent it
// returns at once with quiesced false, the point being crash-consistent.
// Overlapping freezes share one (the agent freezes every filesystem at
// once) and the last thaw thaws; a failed freeze is thawed before Freeze
// returns; a freeze nobody thaws is thawed at a limit (2 min), and a thaw
// that fails is logged as an error and returned.
//
// # Saved states
//
// Save checkpoints a running guest into a folder: in one paused moment
// it drains and flushes the disks, cuts a live snapshot of every
// writable disk (the frozen layer is the disk at that moment) and writes
// QEMU's migration stream (memory and devices) to STATE/memory, then a
// manifest (state.go draws the folder). The guest runs on, on new tops.
// Config.Restore starts QEMU with -incoming, loads the memory and lets
// the guest go on from the saved moment, with no reboot, on fresh tops
// over the frozen layers inside STATE. save.go argues the order.
//
// # Logging
//
// Through Config.Logger, silent when nil: the command line, the
// accelerator chosen (and, at Warn, why KVM was not used), QEMU's own
// messages, the powerdown and teardown.
package hypervisor
