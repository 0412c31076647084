package vhdgen

// catalogue is every mutation: the corruption catalogue that was vhdkit's
// engine/corrupt_test.go, as edits any parser's test can apply. Most make
// an image every reader must refuse; some (a footer damaged while its
// copy is good, a truncation of padding) leave one a reader must still
// read, which the reference decoder decides.
var catalogue = []mutator{
	{"footer cookie", func(t *target) bool { return t.footers(false, func(f []byte) { f[t.arg%8] ^= 0x20 }) }},
	{"footer checksum", func(t *target) bool { return t.footers(false, func(f []byte) { f[OffFooterChecksum+3]++ }) }},
	{"footer checksum of a changed field", func(t *target) bool { return t.footers(false, func(f []byte) { f[OffFooterCurSize+5]++ }) }},
	{"footer version", func(t *target) bool {
		return t.footers(true, put32(OffFooterVersion, uint32(t.pick(0, 0x00020000, 0xFFFF0000))))
	}},
	{"footer disk type", func(t *target) bool {
		return t.footers(true, put32(OffFooterDiskType, uint32(t.pick(0, 1, 5, 6, 1<<31))))
	}},
	{"footer current size not a sector multiple", func(t *target) bool {
		return t.footers(true, func(f []byte) { f[OffFooterCurSize+7] += byte(1 + t.arg%511) })
	}},
	{"footer current size over 2040 GiB", func(t *target) bool {
		return t.footers(true, put64(OffFooterCurSize, t.pick(MaxDiskSize+512, ^uint64(511), 1<<62)))
	}},
	{"footer current size larger than the data", func(t *target) bool {
		grow := uint64(SectorSize) * (1 + t.arg%4096)
		if t.l.sparse() {
			grow = uint64(t.l.BlockSize) * uint64(t.l.ExtraEntries+1) // past what the BAT covers
		}
		return t.footers(true, put64(OffFooterCurSize, uint64(t.l.Size)+grow))
	}},
	{"footer data offset", func(t *target) bool {
		if !t.l.sparse() {
			return t.footers(true, put64(OffFooterDataOffset, t.pick(512, 0, 1536)))
		}
		return t.footers(true, put64(OffFooterDataOffset, t.pick(^uint64(0), 513, 1<<40, ^uint64(511), 1<<63, uint64(t.f.Size()))))
	}},
	{"footer at the end damaged", func(t *target) bool {
		off := t.f.Size() - FooterSize
		t.f.WriteAt(make([]byte, FooterSize-int(t.arg%(FooterSize-8))), off+int64(t.arg%(FooterSize-8)))
		return true
	}},
	{"footer copy at 0 damaged", func(t *target) bool {
		if !t.l.sparse() {
			return false
		}
		t.f.WriteAt([]byte{byte(t.arg) | 1}, int64(t.arg%FooterSize))
		return true
	}},
	{"header cookie", func(t *target) bool { return t.header(false, func(h []byte) { h[t.arg%8] ^= 0x20 }) }},
	{"header checksum", func(t *target) bool { return t.header(false, func(h []byte) { h[OffHdrChecksum+1]++ }) }},
	{"header version", func(t *target) bool {
		return t.header(true, put32(OffHdrVersion, uint32(t.pick(0, 0x00020000))))
	}},
	{"header block size", func(t *target) bool {
		return t.header(true, put32(OffHdrBlockSize, uint32(t.pick(0, 256, 511, 1536, 512<<20, 1<<31, 3<<20))))
	}},
	{"header max table entries too small", func(t *target) bool {
		if !t.l.sparse() {
			return false
		}
		return t.header(true, put32(OffHdrMaxEntries, uint32(t.l.blockCount()-1-int64(t.arg%uint64(t.l.blockCount())))))
	}},
	{"header max table entries huge", func(t *target) bool {
		return t.header(true, put32(OffHdrMaxEntries, uint32(t.pick(0xFFFFFFFF, 1<<28, 1<<20))))
	}},
	{"header table offset", func(t *target) bool {
		return t.header(true, put64(OffHdrTableOffset, t.pick(1<<30, ^uint64(511), uint64(t.f.Size()-FooterSize), 1536+4, 0, 512)))
	}},
	{"BAT entry past the end", func(t *target) bool {
		b := t.block(t.arg >> 8)
		if b < 0 {
			return false
		}
		t.setEntry(b, uint32(t.pick(uint64(t.f.Size()/SectorSize), 0xFFFFFFFE, uint64(t.f.Size()/SectorSize)-1)))
		return true
	}},
	{"BAT entry on metadata", func(t *target) bool {
		b := t.block(t.arg >> 8)
		if b < 0 {
			return false
		}
		on := []uint64{0, 1, 2, uint64(t.lay.TableOffset / SectorSize)}
		for _, l := range t.lay.LocatorAt {
			on = append(on, uint64(l/SectorSize))
		}
		t.setEntry(b, uint32(on[t.arg%uint64(len(on))]))
		return true
	}},
	{"BAT entries overlapping", func(t *target) bool {
		if len(t.l.Blocks) < 2 {
			return false
		}
		a, b := t.block(t.arg>>8), t.block(t.arg>>8+1)
		shift := t.arg % uint64((bitmapBytes(t.l.BlockSize)+t.l.BlockSize)/SectorSize)
		t.setEntry(b, uint32(t.lay.BlockAt[a]/SectorSize+int64(shift)))
		return true
	}},
	{"BAT padding entry", func(t *target) bool {
		if !t.l.sparse() || t.l.ExtraEntries == 0 {
			return false
		}
		t.setEntry(int(t.l.blockCount())+int(t.arg%uint64(t.l.ExtraEntries)), uint32(t.arg>>32))
		return true
	}},
	{"parent locator code", func(t *target) bool { return t.locator(func(e []byte) { copy(e, "xyz\x00") }) }},
	{"parent locator data offset", func(t *target) bool {
		return t.locator(func(e []byte) { be.PutUint64(e[16:], t.pick(uint64(t.f.Size()), 1<<40, 0, 100)) })
	}},
	{"parent locator data length", func(t *target) bool {
		return t.locator(func(e []byte) { be.PutUint32(e[8:], uint32(t.pick(1<<20, 0xFFFFFFFF, uint64(t.f.Size())))) })
	}},
	{"parent UUID", func(t *target) bool {
		return t.l.Type == TypeDifferencing && t.header(true, func(h []byte) { h[OffHdrParentUUID+int(t.arg%16)] ^= 0x40 })
	}},
	{"parent timestamp", func(t *target) bool {
		return t.l.Type == TypeDifferencing && t.header(true, put32(OffHdrParentTime, uint32(t.arg)|1))
	}},
	{"truncated", func(t *target) bool {
		n := t.f.Size()
		cuts := []int64{0, 1, 100, 511, 512, 513, 1536, n / 2, n / 3, n - 1, n - 100, n - 511, n - 512, n - 1024, n - 4096}
		if b := t.block(t.arg >> 8); b >= 0 {
			cuts = append(cuts, t.lay.BlockAt[b]+SectorSize*int64(1+t.arg%7))
		}
		t.f.Truncate(max(cuts[t.arg%uint64(len(cuts))], 0))
		return true
	}},
	{"grown", func(t *target) bool {
		t.f.WriteAt(make([]byte, SectorSize*(1+int64(t.arg%4096))), t.f.Size())
		return true
	}},
}

// locator edits the entry of one of a differencing layer's locators.
func (t *target) locator(fn func(e []byte)) bool {
	if t.l.Type != TypeDifferencing || len(t.l.Locators) == 0 {
		return false
	}
	i := int(t.arg>>16) % len(t.l.Locators)
	return t.header(true, func(h []byte) { fn(h[OffHdrLocators+i*LocatorSize:][:LocatorSize]) })
}
