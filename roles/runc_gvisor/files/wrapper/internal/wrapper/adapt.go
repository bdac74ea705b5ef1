// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Changes records what Adapt changed in a spec.
type Changes struct {
	DroppedCgroupNamespaces int      // B1
	PidNamespaceJoinsDenied []string // B9: the paths the container no longer joins
}

// Changed says whether the spec differs from what it was.
func (c Changes) Changed() bool {
	return c.DroppedCgroupNamespaces > 0 || len(c.PidNamespaceJoinsDenied) > 0
}

// Summary is the one log line that tells what was changed and why.
func (c Changes) Summary() string {
	var parts []string
	if c.DroppedCgroupNamespaces > 0 {
		parts = append(parts, "dropped cgroup namespace (B1)")
	}
	for _, path := range c.PidNamespaceJoinsDenied {
		parts = append(parts, fmt.Sprintf("gave the container its own PID namespace instead of joining %s (B9, pid_namespace_per_container)", path))
	}
	return "runc-gvisor: adapted spec: " + strings.Join(parts, "; ")
}

// B9Error is returned when a spec joins an existing PID namespace on a host
// that cannot, and the profile says to refuse rather than adapt.
type B9Error struct{ Path string }

func (e B9Error) Error() string {
	return "blocker B9: this host (gVisor) cannot join an existing PID namespace; " +
		"the container asks for the pod's PID namespace " + e.Path + " (shareProcessNamespace). " +
		"Enable " + PidNamespacePerContainer + " to give it its own, " +
		"or run the pod without shareProcessNamespace"
}

// B14Error is returned when a spec masks a path that lies inside one of its
// read-only paths, on a host whose runtime leaves such a mask writable.
// crun >= 1.24 masks a directory with a read-only bind of one empty
// directory that every container of its root shares, and applies
// maskedPaths before readonlyPaths; gVisor's recursive bind of the read-only
// path then drops the read-only flag of the mask below it, so the container
// can write into the directory every other container's masks show.
// Masked and Readonly are the paths as the spec spells them.
type B14Error struct{ Masked, Readonly string }

func (e B14Error) Error() string {
	where := fmt.Sprintf(" inside the read-only path %q (linux.readonlyPaths)", e.Readonly)
	if normalPath(e.Masked) == normalPath(e.Readonly) {
		where = fmt.Sprintf(", which is also the read-only path %q (linux.readonlyPaths)", e.Readonly)
	}
	return "blocker B14: on this host (gVisor) the runtime leaves a masked path inside a read-only path writable, " +
		"and its masks share one directory between containers; " +
		fmt.Sprintf("the container masks %q (linux.maskedPaths)%s. ", e.Masked, where) +
		"Remove one of the two from the spec: containerd's default spec never nests them"
}

// B22Error is returned when a spec asks for a new network namespace (a
// "network" entry without a path) on a host whose runtime cannot bring up
// that namespace's loopback: crun does it with ioctl(SIOCSIFFLAGS), which
// gVisor's netstack does not serve, and fails the container with "ioctl
// SIOCSIFFLAGS: Inappropriate ioctl for device". Pods join the namespace
// CNI made and are never refused; bare bundles (runc spec, ctr run) are.
type B22Error struct{}

func (e B22Error) Error() string {
	return "blocker B22: on this host (gVisor) the runtime cannot bring up the loopback of a network namespace it " +
		"makes itself (ioctl SIOCSIFFLAGS is not served); the container asks for a new network namespace " +
		"(a linux.namespaces entry of type \"network\" without a path). Join an existing one by its path, " +
		"as pods do (ctr run --with-ns network:/var/run/netns/NAME), or the host's (ctr run --net-host)"
}

// SpecError is a config.json that is not a spec runc could load.
type SpecError struct{ Reason string }

func (e SpecError) Error() string { return e.Reason }

// Adapt applies the adaptations to a config.json and returns the new bytes,
// or the input itself when nothing changes (then Changes.Changed is false).
// Only linux.namespaces is ever rewritten; everything else is kept byte for
// byte. Applying Adapt to its own output changes nothing. A spec the host
// cannot run (B9, B14, B22, when the profile says to refuse) is an error.
//
// Keys are matched as runc matches them: runc decodes config.json into Go
// structs with encoding/json, which accepts "Linux" for "linux", unescapes
// keys, and lets a later duplicate key override an earlier one. So the
// wrapper sees the namespaces runc will see, however they are spelled.
func Adapt(doc []byte, want Adaptations) ([]byte, Changes, error) {
	linux, err := findLinux(doc)
	if err != nil {
		return nil, Changes{}, err
	}
	if linux == nil {
		return doc, Changes{}, nil
	}
	// One pass over linux, whose seccomp member is most of a CRI spec; the
	// masked and read-only paths are only read where B14 is refused.
	read := linuxMembersRead[:1]
	if want.RefuseMaskedUnderReadonly {
		read = linuxMembersRead
	}
	found, err := onlyMembersNamed(doc, *linux, read)
	if err != nil {
		return nil, Changes{}, err
	}
	if want.RefuseMaskedUnderReadonly {
		if err := refuseMaskedUnderReadonly(doc, found[1], found[2]); err != nil {
			return nil, Changes{}, err
		}
	}
	namespaces := found[0]
	if namespaces == nil {
		return doc, Changes{}, nil
	}
	var changes Changes
	adapted, err := adaptNamespaces(doc, namespaces.value, want, &changes)
	if err != nil {
		return nil, Changes{}, err
	}
	if adapted == nil {
		return doc, Changes{}, nil
	}
	return splice(doc, namespaces.value, adapted), changes, nil
}

// findLinux checks that doc is JSON and a JSON object, and finds its linux
// section, or nil when it has none ("linux": null is none too).
func findLinux(doc []byte) (*span, error) {
	if err := checkJSON(doc); err != nil {
		return nil, err
	}
	root := rootValue(doc)
	if kind(doc, root) != '{' {
		return nil, SpecError{"the spec is not a JSON object"}
	}
	linux, err := onlyMemberNamed(doc, root, "linux")
	if linux == nil || err != nil {
		return nil, err
	}
	switch kind(doc, linux.value) {
	case 'n':
		return nil, nil
	case '{':
		return &linux.value, nil
	default:
		return nil, SpecError{"linux is not an object"}
	}
}

// linuxMembersRead are the members of linux the adaptations read.
var linuxMembersRead = []string{"namespaces", "maskedPaths", "readonlyPaths"}

// onlyMemberNamed returns the member of an object that encoding/json would
// decode into the struct field of that name, or nil when there is none.
func onlyMemberNamed(doc []byte, object span, name string) (*member, error) {
	found, err := onlyMembersNamed(doc, object, []string{name})
	return found[0], err
}

// onlyMembersNamed is onlyMemberNamed for several names in one pass over
// the object: found[i] is the member for names[i], or nil.
// Two members of one name are refused: runc's decoder would merge them (a
// later list's elements decoded over the earlier one's, so a null element
// keeps the earlier value), crun's would take the first spelled exactly so;
// what either reads is not a list as written, and no check or rewrite of
// one could be trusted. containerd and runc never write duplicate keys.
func onlyMembersNamed(doc []byte, object span, names []string) ([]*member, error) {
	found := make([]*member, len(names))
	for _, m := range members(doc, object) {
		for i, name := range names {
			if !strings.EqualFold(m.key, name) {
				continue
			}
			if found[i] != nil {
				return found, SpecError{fmt.Sprintf("%q and %q: the same member twice", found[i].key, m.key)}
			}
			m := m
			found[i] = &m
		}
	}
	return found, nil
}

// adaptNamespaces returns the new namespaces list, or nil when it stays.
func adaptNamespaces(doc []byte, list span, want Adaptations, changes *Changes) ([]byte, error) {
	switch kind(doc, list) {
	case 'n':
		return nil, nil
	case '[':
	default:
		return nil, SpecError{"linux.namespaces is not a list"}
	}
	entries := elements(doc, list)
	kept := make([][]byte, 0, len(entries))
	changed := false
	for i, entry := range entries {
		ns, err := readNamespace(doc, entry)
		if err != nil {
			return nil, SpecError{fmt.Sprintf("linux.namespaces[%d]: %v", i, err)}
		}
		switch {
		case ns.typ == "cgroup" && want.DropCgroupNamespace:
			changes.DroppedCgroupNamespaces++
			changed = true
			continue
		case ns.typ == "pid" && ns.path != "" && want.PidNamespacePerContainer:
			kept = append(kept, withoutPath(doc, entry))
			changes.PidNamespaceJoinsDenied = append(changes.PidNamespaceJoinsDenied, ns.path)
			changed = true
			continue
		case ns.typ == "pid" && ns.path != "" && want.RefusePidNamespaceJoin:
			return nil, B9Error{ns.path}
		case ns.typ == "network" && ns.path == "" && want.RefuseNewNetworkNamespace:
			return nil, B22Error{}
		}
		kept = append(kept, entry.in(doc))
	}
	if !changed {
		return nil, nil
	}
	return rebuild(doc, list, entries, kept), nil
}

// namespace is one linux.namespaces entry as runc reads it.
type namespace struct{ typ, path string }

func readNamespace(doc []byte, entry span) (namespace, error) {
	var ns namespace
	switch kind(doc, entry) {
	case 'n':
		return ns, nil // null decodes to an empty entry in runc, which it rejects itself
	case '{':
	default:
		return ns, errors.New("not an object")
	}
	// Decoding each matching member into the same variable in order is what
	// encoding/json does for a struct field: a later duplicate wins, null
	// leaves the value as it was.
	for _, m := range members(doc, entry) {
		var err error
		switch {
		case strings.EqualFold(m.key, "type"):
			err = json.Unmarshal(m.value.in(doc), &ns.typ)
		case strings.EqualFold(m.key, "path"):
			err = json.Unmarshal(m.value.in(doc), &ns.path)
		default:
			continue
		}
		if err != nil {
			return ns, fmt.Errorf("%s is not a string", m.key)
		}
	}
	return ns, nil
}

// withoutPath is a namespace entry with its path removed: a new namespace of
// that type instead of joining an existing one. Other fields are kept.
func withoutPath(doc []byte, entry span) []byte {
	all := members(doc, entry)
	parts := make([]span, len(all))
	var kept [][]byte
	for i, m := range all {
		parts[i] = m.whole
		if !strings.EqualFold(m.key, "path") {
			kept = append(kept, m.whole.in(doc))
		}
	}
	return rebuild(doc, entry, parts, kept)
}

// checkJSON rejects what runc's decoder would reject as malformed JSON,
// naming the offset of the first bad byte.
func checkJSON(doc []byte) error {
	if json.Valid(doc) {
		return nil
	}
	return SpecError{describeJSONError(json.Unmarshal(doc, new(json.RawMessage)))}
}

func describeJSONError(err error) string {
	if syntax, ok := err.(*json.SyntaxError); ok {
		return fmt.Sprintf("invalid JSON at offset %d: %v", syntax.Offset, syntax)
	}
	return err.Error()
}

// refuseMaskedUnderReadonly returns a B14Error for the first masked path
// that lies inside (or is) a read-only path. "Inside" is component-wise,
// on the paths normalised as the runtime resolves them in the container's
// root: /proc/sys covers /proc/sys/kernel and /proc/sys, not
// /proc/sysrq-trigger. Symbolic links in the container's root are not
// followed: the root file system is not the wrapper's to read.
func refuseMaskedUnderReadonly(doc []byte, maskedList, readonlyList *member) error {
	masked, err := pathList(doc, maskedList, "maskedPaths")
	if err != nil {
		return err
	}
	readonly, err := pathList(doc, readonlyList, "readonlyPaths")
	if err != nil {
		return err
	}
	if len(masked) == 0 || len(readonly) == 0 {
		return nil
	}
	normalReadonly := make([]string, len(readonly))
	for i, r := range readonly {
		normalReadonly[i] = normalPath(r)
	}
	for _, m := range masked {
		normalMasked := normalPath(m)
		for i, r := range normalReadonly {
			if pathWithin(normalMasked, r) {
				return B14Error{Masked: m, Readonly: readonly[i]}
			}
		}
	}
	return nil
}

// pathList reads linux.maskedPaths or linux.readonlyPaths (the member list,
// nil when there is none) as runc decodes it: a list of strings, or nothing
// when absent or null. A null element is an empty string, as it is for
// runc and for crun (which then uses the container's root itself).
// Duplicate members were refused by onlyMembersNamed.
func pathList(doc []byte, list *member, name string) ([]string, error) {
	if list == nil {
		return nil, nil
	}
	switch kind(doc, list.value) {
	case 'n':
		return nil, nil
	case '[':
	default:
		return nil, SpecError{"linux." + name + " is not a list"}
	}
	entries := elements(doc, list.value)
	paths := make([]string, len(entries))
	for i, entry := range entries {
		switch kind(doc, entry) {
		case 'n': // encoding/json leaves the string empty
		case '"':
			paths[i] = unquote(entry.in(doc))
		default:
			return nil, SpecError{fmt.Sprintf("linux.%s[%d]: not a string", name, i)}
		}
	}
	return paths, nil
}

// normalPath is a masked or read-only path as the runtime resolves it in
// the container's root: runc uses it after pivot_root with "/" as the
// working directory, crun strips one leading slash and opens the rest
// beneath the root (openat2 RESOLVE_IN_ROOT; "" is the root itself). Either
// way "proc/sys", "/proc/sys/", "//proc/./sys" and "/x/../proc/sys" are
// /proc/sys, and ".." cannot climb above the root.
func normalPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p) // no copy when it is clean already
	}
	return path.Clean("/" + p)
}

// pathWithin says whether the normalised path p is dir or lies beneath it.
func pathWithin(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}
