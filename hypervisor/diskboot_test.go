package hypervisor

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine"
)

// bootSector is a tiny boot loader: it writes a line to the first serial
// port and powers the machine off through ACPI (PM1a control at 0x604,
// where SeaBIOS puts it on QEMU's pc machine).
//
//	xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
//	loop: lodsb; test al,al; jz done; out dx,al; jmp loop
//	done: mov dx,0x604; mov ax,0x2000; out dx,ax; hlt; jmp $-1
func bootSector() []byte {
	code := []byte{
		0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x1C, 0x7C, 0xBA, 0xF8, 0x03,
		0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,
		0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF, 0xF4, 0xEB, 0xFD,
	}
	mbr := make([]byte, 512)
	copy(mbr, code)
	copy(mbr[len(code):], "BOOTED-FROM-DISK\r\n\x00")
	mbr[510], mbr[511] = 0x55, 0xAA
	return mbr
}

// TestBootFromDisk: with no kernel the firmware boots the first disk:
// here a VHD whose boot sector prints a line and powers off.
func TestBootFromDisk(t *testing.T) {
	t.Parallel()
	img := filepath.Join(t.TempDir(), "boot.vhd")
	makeImage(t, img, engine.TypeDynamic, 8<<20, bootSector(), 0)
	con := newConsoleWatch(t)
	vm, err := New(Config{Disks: []Disk{{Path: img, ReadOnly: true}}, Accel: AccelTCG, Memory: 64 << 20,
		Console: con, QEMUArgs: []string{"-no-reboot"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := vm.Run(ctx); err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, con)
	}
	if !strings.Contains(con.String(), "BOOTED-FROM-DISK") {
		t.Fatalf("the disk's boot sector did not run:\n%s", con)
	}
	checkClean(t, img)
}
