package main

import (
	"fmt"
	"strings"
)

// otherNames are what users of other tools type for a vhd command.
var otherNames = map[string]string{
	"commit":   "merge",   // qemu-img commit
	"flatten":  "convert", // a chain into one image
	"dismount": "umount",  // Dismount-VHD
	"unmount":  "umount",
	"ls":       "tree",
	"list":     "tree",
	"nbd":      "serve", // qemu-nbd
	"export":   "serve",
	"optimize": "compact", // Optimize-VHD
	"diff":     "compare",
	"new":      "create",
	"verify":   "check",
	"fix":      "repair",
	"grow":     "resize",
	"shrink":   "resize",
	"status":   "info",
	"get":      "info", // Get-VHD
	// VBoxManage internalcommands sethduuid, Set-VHD -ResetDiskIdentifier
	"sethduuid":           "reset-id",
	"set-uuid":            "reset-id",
	"setuuid":             "reset-id",
	"set-id":              "reset-id",
	"new-uuid":            "reset-id",
	"reset-uuid":          "reset-id",
	"resetdiskidentifier": "reset-id",
}

// notACommand is the error for an unknown command name: the nearest
// command, if one is near, and the list.
func notACommand(name string) string {
	msg := fmt.Sprintf("%q is not a vhd command", name)
	if s := suggest(name); s != "" {
		msg += fmt.Sprintf("; did you mean 'vhd %s'?", s)
	} else {
		msg += "."
	}
	return msg + " Commands: " + commandList() + "; 'vhd help' says what each does"
}

// suggest is the command name meant by name, or "": another tool's word
// for it, a prefix, or a name at most two edits away.
func suggest(name string) string {
	lower := strings.ToLower(name)
	if s, ok := otherNames[lower]; ok && lookup(s) != nil {
		return s
	}
	best, bestDist := "", 3
	for _, c := range commands {
		if len(lower) >= 3 && strings.HasPrefix(c.name, lower) {
			return c.name
		}
		if d := editDistance(lower, c.name); d < bestDist {
			best, bestDist = c.name, d
		}
	}
	return best
}

// commandList is every command's name, comma-separated.
func commandList() string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance between a and b (short words).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
