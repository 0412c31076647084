// Package shq quotes a path or word for the shell, so that a command a
// message suggests ("run vhd merge PATH again") can be pasted as it is,
// also when PATH holds a space, a quote or a dollar sign.
package shq

import "strings"

// Quote returns s as is when the shell takes it as one word unchanged
// (letters, digits and _ . / : @ % + = , -), else in double quotes with
// the four characters special inside them (" \ $ `) escaped. Double
// quotes, not single ones: messages put whole commands in single quotes.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@%+=,-") == "" {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if strings.ContainsRune("\"\\$`", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
