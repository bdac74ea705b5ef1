// SPDX-License-Identifier: Apache-2.0

// Command runc-gvisor stands in for runc under containerd's runc shim on
// gVisor hosts. It adapts a container's config.json where the host needs it
// (see internal/wrapper) and then execs the real runc.
package main

import (
	"os"

	"k3s-gvisor/runc-gvisor/internal/wrapper"
)

// Set at build time with -ldflags "-X main.profilePath=... -X main.version=...".
var (
	profilePath = "/etc/runc-gvisor/profile.json"
	version     = "dev"
)

func main() {
	os.Exit(wrapper.Main(os.Args, wrapper.Build{
		DefaultProfilePath: profilePath,
		Version:            version,
	}))
}
