// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"encoding/json"
	"errors"
	"fmt"
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

// SpecError is a config.json that is not a spec runc could load.
type SpecError struct{ Reason string }

func (e SpecError) Error() string { return e.Reason }

// Adapt applies the adaptations to a config.json and returns the new bytes,
// or the input itself when nothing changes (then Changes.Changed is false).
// Only linux.namespaces is ever rewritten; everything else is kept byte for
// byte. Applying Adapt to its own output changes nothing.
//
// Keys are matched as runc matches them: runc decodes config.json into Go
// structs with encoding/json, which accepts "Linux" for "linux", unescapes
// keys, and lets a later duplicate key override an earlier one. So the
// wrapper sees the namespaces runc will see, however they are spelled.
func Adapt(doc []byte, want Adaptations) ([]byte, Changes, error) {
	namespaces, err := findNamespaces(doc)
	if err != nil {
		return nil, Changes{}, err
	}
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

// findNamespaces checks that doc is JSON and finds linux.namespaces, or nil
// when the spec has none.
func findNamespaces(doc []byte) (*member, error) {
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
	return namespacesOf(doc, linux.value)
}

// namespacesOf finds linux.namespaces, or nil when there is none.
func namespacesOf(doc []byte, linux span) (*member, error) {
	switch kind(doc, linux) {
	case 'n':
		return nil, nil // "linux": null is no linux section at all
	case '{':
		return onlyMemberNamed(doc, linux, "namespaces")
	default:
		return nil, SpecError{"linux is not an object"}
	}
}

// onlyMemberNamed returns the member of an object that encoding/json would
// decode into the struct field of that name, or nil when there is none.
// Two such members are refused: runc's decoder would merge them, the later
// list's entries decoded over the earlier one's, so what runc reads is
// neither list as written and no rewrite of either could be trusted.
// containerd and runc never write duplicate keys.
func onlyMemberNamed(doc []byte, object span, name string) (*member, error) {
	var found *member
	for _, m := range members(doc, object) {
		if !strings.EqualFold(m.key, name) {
			continue
		}
		if found != nil {
			return nil, SpecError{fmt.Sprintf("%q and %q: the same member twice", found.key, m.key)}
		}
		m := m
		found = &m
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
