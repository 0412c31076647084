package hypervisor

import (
	"io"
	"net"
	"sync"
)

// console carries the guest's serial console from QEMU's socket to the
// user (Config.Console) and, if asked, the user's input to it. Its
// first byte is the guest's first sign of life (the accelerator probe:
// the firmware says nothing on the serial port, so the byte is the
// guest's own).
type console struct {
	out io.Writer
	in  io.Reader

	life     chan struct{} // closed at the first byte
	lifeOnce sync.Once
	done     chan struct{} // closed when QEMU closes the console
}

// tailBytes is how much of QEMU's own output is kept for errors.
const tailBytes = 2048

func newConsole(out io.Writer, in io.Reader) *console {
	return &console{out: out, in: in, life: make(chan struct{}), done: make(chan struct{})}
}

// serve copies the console until QEMU closes it. The user's writer
// failing (a closed pipe) does not stop the guest: output is then
// dropped, and still watched for life.
func (c *console) serve(conn net.Conn) {
	defer close(c.done)
	defer conn.Close()
	if c.in != nil {
		go io.Copy(conn, c.in) // ends when conn closes
	}
	buf := make([]byte, 32<<10)
	outOK := true
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			c.lifeOnce.Do(func() { close(c.life) })
			if outOK {
				_, werr := c.out.Write(buf[:n])
				outOK = werr == nil
			}
		}
		if err != nil {
			return
		}
	}
}
