package engine

import (
	"crypto/rand"
	"fmt"
)

// UUID is a VHD unique id, stored as 16 raw bytes.
type UUID [16]byte

// NewUUID returns a random (version 4) UUID.
func NewUUID() UUID {
	var u UUID
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// IsZero reports whether the UUID is all zeros.
func (u UUID) IsZero() bool { return u == UUID{} }

func (u UUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
