package main

import (
	"fmt"
	"strconv"
	"strings"

	"vhdkit/engine"
	"vhdkit/vhdfs"
)

// resizeSizeFlag is resize's --size: SIZE, or +SIZE / -SIZE to grow or
// shrink by that much (qemu-img resize's spelling).
type resizeSizeFlag struct {
	n    int64
	sign int // +1 or -1 for a relative size, 0 for an absolute one
	set  bool
}

func (f *resizeSizeFlag) String() string {
	if !f.set {
		return ""
	}
	return map[int]string{-1: "-", 0: "", 1: "+"}[f.sign] + strconv.FormatInt(f.n, 10)
}

func (f *resizeSizeFlag) Set(s string) error {
	sign := 0
	switch {
	case strings.HasPrefix(s, "+"):
		sign, s = 1, s[1:]
	case strings.HasPrefix(s, "-"):
		sign, s = -1, s[1:]
	}
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n, f.sign, f.set = n, sign, true
	return nil
}

func (f *resizeSizeFlag) Type() string { return "[+|-]SIZE" }

// target is the size asked for, given the image's current size.
func (f *resizeSizeFlag) target(current int64) (int64, error) {
	switch f.sign {
	case 1:
		return current + f.n, nil
	case -1:
		if f.n >= current {
			return 0, usageErr("--size -%d: the image is only %d bytes", f.n, current)
		}
		return current - f.n, nil
	}
	return f.n, nil
}

// minimumSize is the end of the last partition of img (Resize-VHD
// -ToMinimumSize): what shrinking to it keeps is every partition whole.
// A GPT disk keeps its backup table after that (see minimumGPT); gpt
// says the table must move before the disk shrinks.
func minimumSize(img *engine.Image) (n int64, gpt bool, err error) {
	t, err := vhdfs.ReadTable(img, img.Size())
	if err != nil {
		return 0, false, fmt.Errorf("read the partition table: %w", err)
	}
	switch {
	case t.Kind == "":
		return 0, false, fmt.Errorf("%s has no partition table, so nothing says where its data ends; give --size", img.Name())
	case t.Kind == "gpt":
		n, err := minimumGPT(img)
		return n, true, err
	case len(t.Problems) > 0:
		return 0, false, fmt.Errorf("%s's partition table has entries that could not be read (%s), so where the data ends is unknown; give --size", img.Name(), strings.Join(t.Problems, "; "))
	case len(t.Partitions) == 0:
		return 0, false, fmt.Errorf("%s's partition table lists no partition; give --size", img.Name())
	}
	var end int64
	for _, p := range t.Partitions {
		end = max(end, p.Start+p.Len)
	}
	return end, false, nil
}
