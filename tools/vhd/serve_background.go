package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"vhdkit/service"
)

// serveBackground are vhd serve's flags for running as a daemon:
// --fork (qemu-nbd's spelling) and --pid-file, and the hidden ones the
// background server is started with.
type serveBackground struct {
	fork    bool
	pidFile string
	readyFD int
	log     string
}

func addServeBackground(fs *pflag.FlagSet) *serveBackground {
	b := &serveBackground{}
	fs.BoolVar(&b.fork, "fork", false, "serve in the background once listening: print the URIs and control:PATH, then return")
	fs.StringVar(&b.pidFile, "pid-file", "", "write the server's pid to this file once it listens; removed when it stops")
	fs.IntVar(&b.readyFD, "ready-fd", -1, "")
	fs.StringVar(&b.log, "server-log", "", "")
	fs.MarkHidden("ready-fd")
	fs.MarkHidden("server-log")
	return b
}

// startDetached runs this same command line again without --fork, in the
// background, waits until it listens (or says why it cannot), prints
// what it would have printed, and returns.
func (b *serveBackground) startDetached(ctx context.Context, e *env) error {
	log, err := service.ServerLog("serve")
	if err != nil {
		return err
	}
	args := []string{os.Args[1], fmt.Sprintf("--ready-fd=%d", service.ReadyFD), "--server-log=" + log}
	for _, a := range os.Args[2:] {
		if a != "--fork" && !strings.HasPrefix(a, "--fork=") {
			args = append(args, a)
		}
	}
	a, err := service.StartServer(ctx, "the NBD server", args, log)
	if err != nil {
		return err
	}
	for _, l := range a.Lines {
		fmt.Fprintln(e.stdout, l)
	}
	fmt.Fprintf(e.stderr, "vhd serve: serving in the background, pid %d (log %s); 'kill %d' stops it cleanly\n", a.PID, a.Log, a.PID)
	return nil
}

// runAnnouncing runs serveFn, which calls announce once it listens: the lines go to
// standard output in the foreground, or through the readiness pipe to
// the 'vhd serve --fork' that started this server. The pid file exists
// from then until the server has stopped (images closed).
func (b *serveBackground) runAnnouncing(e *env, serveFn func(announce func([]string) error) error) error {
	pipe := service.OpenReadyPipe(b.readyFD)
	announced := false
	err := serveFn(func(lines []string) error {
		if b.pidFile != "" {
			if err := service.WritePIDFile(b.pidFile); err != nil {
				return fmt.Errorf("%w (choose another --pid-file)", err)
			}
		}
		announced = true
		if pipe != nil {
			pipe.Ready(service.Announcement{Lines: lines, PID: os.Getpid(), Log: b.log})
			return nil
		}
		for _, l := range lines {
			fmt.Fprintln(e.stdout, l)
		}
		return nil
	})
	if announced {
		b.removePIDFile()
	}
	if err != nil {
		pipe.FailWith(userText("serve", err))
		return err
	}
	if b.log != "" {
		service.RemoveOwnLog(b.log)
	}
	return nil
}

// removePIDFile removes the --pid-file, if one was asked for (and still
// names this process: see service.RemovePIDFile).
func (b *serveBackground) removePIDFile() {
	if b.pidFile != "" {
		service.RemovePIDFile(b.pidFile)
	}
}
