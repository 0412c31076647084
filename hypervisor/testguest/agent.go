package testguest

// AgentPortName is the virtio-serial port qemu-guest-agent opens by
// default, the one the runner gives every guest (hypervisor.AgentPort:
// this package cannot import the runner its tests boot guests for).
const AgentPortName = "org.qemu.guest_agent.0"

// StartAgent is a piece of guest script that starts Debian's
// qemu-guest-agent in the background (the guest's Programs must hold
// qemu-ga). It finds the agent's port by its name (the initramfs has no
// udev for the /dev/virtio-ports link) and gives the agent a freeze
// hook that prints "HOOK freeze" and "HOOK thaw" on the console, which
// is how a test sees that the freeze reached the guest's hook; then it
// prints "AGENT-STARTED".
const StartAgent = `export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name 2>/dev/null)" = ` + AgentPortName + ` ] && port=/dev/${p##*/}
done
echo "agent port: $port"
printf '#!/bin/sh\necho "HOOK $1" > /dev/console\n' > /hook
chmod +x /hook
qemu-ga -m virtio-serial -p $port -t /tmp -f /tmp/qga.pid -F/hook &
echo AGENT-STARTED
`
