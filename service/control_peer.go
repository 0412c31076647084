package service

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The control socket is the server's whole power over its disks, so only
// its own user may use it. Its file has mode 0600 in a private folder,
// but a mode can be changed, a folder can be the wrong one (--control
// PATH anywhere), and root's connect ignores modes anyway: so every
// connection's peer is also asked of the kernel (SO_PEERCRED, the
// credentials of the process that connected, which it cannot forge) and
// one from any other uid is answered 403 and closed before its request
// reaches a handler.

// peerListener accepts only connections from this process's effective
// uid.
type peerListener struct {
	*net.UnixListener
	uid int
	log *slog.Logger
}

// Accept returns the next connection from this user; others are refused
// (refuseConn) on the side.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == l.uid {
			return c, nil
		}
		if err == nil {
			err = fmt.Errorf("the control socket is uid %d's; uid %d may not use it", l.uid, uid)
		}
		l.log.Warn("vhd: control connection refused", "err", err)
		go refuseConn(c, err)
	}
}

// peerUID asks the kernel who is at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return int(cred.Uid), nil
}

// refuseConn answers a refused connection's first request with a JSON
// 403 and closes it. The request is read first (within a second and a
// few KiB): a unix socket closed with unread data makes the client's
// read fail with ECONNRESET instead of showing it the reason.
func refuseConn(c *net.UnixConn, why error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if req, err := http.ReadRequest(bufio.NewReader(&limitedConn{c, 64 << 10})); err == nil {
		req.Body.Close()
	}
	body, _ := json.Marshal(errorReply{apiErr(CodeForbidden,
		fmt.Sprintf("%v: run vhd ctl as the user who started vhd serve (uid %d)", why, os.Geteuid()))})
	fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n", len(body)+1, body)
}

// limitedConn reads at most n bytes of a connection.
type limitedConn struct {
	c *net.UnixConn
	n int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too long")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}
