// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// ProfileEnv overrides the profile's path; meant for tests.
const ProfileEnv = "RUNC_GVISOR_PROFILE"

// maxProfileSize bounds the one read of the profile, which is a few hundred
// bytes. Keep the buffer small: inside gVisor a 64 KiB buffer made every
// passthrough call measurably slower (0.7 ms, median of 60) than 4 KiB, which
// costs nothing measurable over not reading a profile at all.
const maxProfileSize = 4 << 10

// Profile is the host profile the Ansible role writes at install time, from
// the probe's facts. It says where the real runc is and which adaptations
// this host needs, so nothing is guessed while containers start.
//
// Why a profile file rather than baking the real runc's path into the binary
// with -ldflags: passthrough calls (state, kill, delete, ...) then pay one
// read of a tiny file, which costs next to nothing beside the process start
// itself (see README.md for the numbers measured inside gVisor), and in
// exchange one build of the wrapper serves every host, the real runc can move
// without a rebuild, and the role has a single place to state and check what
// it installed (--runc-gvisor-info). The adaptations have to come from a
// file anyway, so a baked path would add a second source of truth.
type Profile struct {
	Runc        string   `json:"runc"`
	Adaptations []string `json:"adaptations"`
}

// ProfilePath is where the profile is read from: RUNC_GVISOR_PROFILE if set,
// else the path baked in at build time.
func ProfilePath(defaultPath string) string {
	if p := os.Getenv(ProfileEnv); p != "" {
		return p
	}
	return defaultPath
}

// LoadProfile reads and parses the profile: one open and read of a small
// file, because every runc call the shim makes pays for it.
func LoadProfile(path string) (Profile, error) {
	data, err := readSmallFile(path, maxProfileSize)
	if err != nil {
		return Profile{}, fmt.Errorf("host profile %s: %w", path, pathErrorCause(err))
	}
	var p Profile
	if err := json.Unmarshal(data, &p); err != nil {
		return Profile{}, fmt.Errorf("host profile %s: %s", path, describeJSONError(err))
	}
	if !filepath.IsAbs(p.Runc) {
		return Profile{}, fmt.Errorf("host profile %s: \"runc\" must be the absolute path of the real runc, got %q", path, p.Runc)
	}
	return p, nil
}

// Adaptation names, as the role writes them into the profile.
const (
	DropCgroupNamespace       = "drop_cgroup_namespace"
	PidNamespacePerContainer  = "pid_namespace_per_container"
	RefusePidNamespaceJoin    = "refuse_pid_namespace_join"
	RefuseMaskedUnderReadonly = "refuse_masked_under_readonly"
	RefuseNewNetworkNamespace = "refuse_new_network_namespace"
)

// Adaptations is the set of spec changes a host needs.
type Adaptations struct {
	DropCgroupNamespace       bool // B1
	PidNamespacePerContainer  bool // B9, opt-in
	RefusePidNamespaceJoin    bool // B9, the default where the host has it
	RefuseMaskedUnderReadonly bool // B14, where the chosen runtime showed it
	RefuseNewNetworkNamespace bool // B22, where the chosen runtime showed it
}

// KnownAdaptations lists every name the wrapper understands.
func KnownAdaptations() []string {
	names := make([]string, 0, len(adaptationSetters))
	for name := range adaptationSetters {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

var adaptationSetters = map[string]func(*Adaptations){
	DropCgroupNamespace:       func(a *Adaptations) { a.DropCgroupNamespace = true },
	PidNamespacePerContainer:  func(a *Adaptations) { a.PidNamespacePerContainer = true },
	RefusePidNamespaceJoin:    func(a *Adaptations) { a.RefusePidNamespaceJoin = true },
	RefuseMaskedUnderReadonly: func(a *Adaptations) { a.RefuseMaskedUnderReadonly = true },
	RefuseNewNetworkNamespace: func(a *Adaptations) { a.RefuseNewNetworkNamespace = true },
}

// ParseAdaptations turns the profile's names into a set. An unknown name is
// an error rather than ignored: it means the role and the wrapper disagree,
// and a container started without an adaptation its host needs fails later
// with a far less helpful message. Only create and run check this, so that
// state, kill and delete keep working to clean up whatever exists.
func (p Profile) ParseAdaptations() (Adaptations, error) {
	var a Adaptations
	for _, name := range p.Adaptations {
		set, ok := adaptationSetters[name]
		if !ok {
			return Adaptations{}, fmt.Errorf("host profile: unknown adaptation %q (this runc-gvisor knows %v)", name, KnownAdaptations())
		}
		set(&a)
	}
	return a, nil
}

// readSmallFile reads a whole file of at most limit bytes with one open and
// one read (os.ReadFile adds an fstat and a second read to see the end). A
// read of a regular file returns everything up to the buffer's size, so a
// short read is the whole file; a full buffer means the file is too large.
func readSmallFile(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, limit+1)
	n, err := f.Read(buf)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return buf[:n], nil
}
