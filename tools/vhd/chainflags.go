package main

import (
	"github.com/spf13/pflag"

	"vhdkit/chains"
	"vhdkit/nbdclient"
)

// chainFlags are the flags of every command that opens a differencing
// chain: where parents may be, how deep a chain may go, and whether a
// modified parent is acceptable.
type chainFlags struct {
	parentDirs     []string
	maxDepth       int
	acceptModified bool
	// forceShare is -U of the commands that only read (addForceShare).
	forceShare bool
	// tls are the files for an nbds:// source (addNBDSource).
	tls nbdclient.TLSFiles
}

const chainHelp = `Parents of differencing images are found through their locators (W2ru,
W2ku, MacX) and by name in the child's folder. --parent-dir (repeatable)
and the environment variable VHD_PARENT_PATH (folders separated by ':')
confine parents to those folders: a locator leading elsewhere is then an
error, never a silent read.`

func addChainFlags(fs *pflag.FlagSet) *chainFlags {
	c := &chainFlags{}
	fs.StringArrayVar(&c.parentDirs, "parent-dir", nil, "allow parents only inside this folder (repeatable; adds to VHD_PARENT_PATH)")
	fs.IntVar(&c.maxDepth, "max-depth", chains.DefaultMaxDepth, "refuse chains with more layers than this")
	fs.BoolVar(&c.acceptModified, "accept-modified-parent", false, "use a parent written after the child was made: right only if its data did not change (else the disk reads a mix of old and new)")
	for _, n := range []string{"parent-dir", "max-depth", "accept-modified-parent"} {
		fs.SetAnnotation(n, chainGroup, nil) // help shows them as a group
	}
	return c
}

// options are the chains.Options the flags and environment ask for.
func (c *chainFlags) options(readOnly bool) chains.Options {
	return chains.Options{
		ReadOnly:             readOnly,
		ParentDirs:           append(chains.ParentDirsFromEnv(), c.parentDirs...),
		MaxDepth:             c.maxDepth,
		AcceptModifiedParent: c.acceptModified,
		NoLock:               readOnly && c.forceShare,
	}
}

// addForceShare gives a command that only reads images qemu-img's -U:
// read them even while another process writes them.
func (c *chainFlags) addForceShare(fs *pflag.FlagSet) {
	fs.BoolVarP(&c.forceShare, "force-share", "U", false, "read the images without a lock, even while another process writes them (what is read may then be inconsistent)")
}

// addNBDSource gives a command that reads disks the client's TLS files
// for a source named by an nbds:// URI (openView, convert).
func (c *chainFlags) addNBDSource(fs *pflag.FlagSet) {
	addTLSFlags(fs, &c.tls, "")
}

// tlsFor refuses the --tls-* flags when none of srcs is an nbds:// URI:
// they would be ignored.
func (c *chainFlags) tlsFor(srcs ...string) error {
	for _, s := range srcs {
		if nbdclient.IsURI(s) && tlsGoesWith(s, c.tls) == nil {
			return nil
		}
	}
	return tlsGoesWith(srcs[0], c.tls)
}
