// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// runcView decodes a spec the way runc does (encoding/json into structs),
// keeping only what the adaptations are about.
type runcView struct {
	Linux *struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
	} `json:"linux"`
}

func adaptationsFromBits(bits uint8) Adaptations {
	return Adaptations{
		DropCgroupNamespace:       bits&1 != 0,
		PidNamespacePerContainer:  bits&2 != 0,
		RefusePidNamespaceJoin:    bits&4 != 0,
		RefuseMaskedUnderReadonly: bits&8 != 0,
		RefuseNewNetworkNamespace: bits&16 != 0,
	}
}

// FuzzAdapt checks, for any input and any set of adaptations: invalid JSON
// is refused; valid JSON gives valid JSON that differs only in
// linux.namespaces; a second pass changes nothing; runc would see no cgroup
// namespace and no PID namespace join that the adaptations remove; and a
// spec that needs nothing is returned as it was.
func FuzzAdapt(f *testing.F) {
	for _, seed := range []string{
		specWithCgroup,
		`{"linux":{"namespaces":[{"type":"pid","path":"/proc/42/ns/pid"},{"type":"cgroup"}]}}`,
		`{"Linux":{"NameSpaces":[{"TYPE":"cgroup"},{"Type":"pid","type":null,"PATH":"/x"}]}}`,
		`{"linux":{"namespaces":[null,{"type":"cgr\u006fup"}]},"z":[1,{"a":"\"]}"}]}`,
		" {\"linux\" : { \"namespaces\" : [ {\"type\":\"net\"} , {\"type\":\"cgroup\"} ] } } \n",
		`{"linux":null}`, `[]`, `{"linux":{"namespaces":{}}}`, `{`, ``,
		`{"linux":{"maskedPaths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys"],"namespaces":[{"type":"cgroup"}]}}`,
		`{"linux":{"maskedPaths":["/proc/sysrq-trigger","/proc/sys/.."],"readonlyPaths":["/proc/sys/"]}}`,
		`{"linux":{"MaskedPaths":["proc//sys/./kernel/"],"readonlyPaths":[null,"/proc/sys"]}}`,
		`{"linux":{"maskedPaths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys"],"maskedPaths":[]}}`,
		`{"linux":{"maskedPaths":["/sys/firmware"],"readonlyPaths":[""]},"Linux":null}`,
		`{"linux":{"maskedPaths":["/a/b\u0000"],"readonlyPaths":["/a/../a"],"readonlyPaths":5}}`,
		`{"linux":{"namespaces":[{"type":"network"},{"type":"cgroup"}]}}`,
		`{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-1"}]}}`,
		`{"linux":{"namespaces":[{"Type":"network","path":"/x","PATH":""}]}}`,
	} {
		f.Add([]byte(seed), uint8(31))
		f.Add([]byte(seed), uint8(15))
		f.Add([]byte(seed), uint8(7))
		f.Add([]byte(seed), uint8(1))
	}
	f.Add(readFixture(f, "cri-config.json"), uint8(11))
	f.Add(readFixture(f, "runc-spec.json"), uint8(13))
	f.Fuzz(func(t *testing.T, doc []byte, bits uint8) {
		want := adaptationsFromBits(bits)
		out, changes, err := Adapt(doc, want)
		if !json.Valid(doc) {
			if err == nil || !strings.HasPrefix(err.Error(), "invalid JSON at offset ") {
				t.Fatalf("invalid JSON accepted or misreported: %v", err)
			}
			return
		}
		if err != nil {
			checkRefusal(t, doc, want, err)
			return
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q", out)
		}
		if !changes.Changed() && !bytes.Equal(out, doc) {
			t.Fatalf("no changes reported but output differs")
		}
		assertOnlyNamespacesDiffer(t, doc, out)
		assertIdempotent(t, out, want)
		checkRuncSeesNoBlocker(t, out, want)
		if want.RefuseMaskedUnderReadonly {
			checkNoMaskUnderReadonly(t, out)
		}
		if changes.Changed() {
			checkRuncSawABlocker(t, doc, want)
		}
	})
}

// checkRefusal accepts only the errors Adapt documents for valid JSON.
func checkRefusal(t *testing.T, doc []byte, want Adaptations, err error) {
	var b9 B9Error
	var b14 B14Error
	var b22 B22Error
	var spec SpecError
	switch {
	case errors.As(err, &b9):
		if !want.RefusePidNamespaceJoin || want.PidNamespacePerContainer {
			t.Fatalf("B9 refusal with %+v", want)
		}
	case errors.As(err, &b14):
		if !want.RefuseMaskedUnderReadonly {
			t.Fatalf("B14 refusal with %+v", want)
		}
		checkMaskUnderReadonly(t, doc, b14)
	case errors.As(err, &b22):
		if !want.RefuseNewNetworkNamespace || !runcMakesNetworkNamespace(t, doc) {
			t.Fatalf("B22 refusal with %+v of %s", want, doc)
		}
	case errors.As(err, &spec):
		// What runc's decoder would reject must not be taken as a spec.
	default:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
}

// checkRuncSeesNoBlocker decodes the output as runc would.
func checkRuncSeesNoBlocker(t *testing.T, out []byte, want Adaptations) {
	var view runcView
	if err := json.Unmarshal(out, &view); err != nil {
		t.Fatalf("Adapt accepted a spec runc cannot decode: %v\n%s", err, out)
	}
	if view.Linux == nil {
		return
	}
	for _, ns := range view.Linux.Namespaces {
		if want.DropCgroupNamespace && ns.Type == "cgroup" {
			t.Fatalf("a cgroup namespace remains: %s", out)
		}
		if want.PidNamespacePerContainer && ns.Type == "pid" && ns.Path != "" {
			t.Fatalf("a PID namespace join remains: %s", out)
		}
	}
	if want.RefuseNewNetworkNamespace && runcMakesNetworkNamespace(t, out) {
		t.Fatalf("let through a spec whose network namespace runc would make: %s", out)
	}
}

// runcMakesNetworkNamespace: the spec, as runc decodes it, asks for a new network namespace.
func runcMakesNetworkNamespace(t *testing.T, doc []byte) bool {
	var view runcView
	if err := json.Unmarshal(doc, &view); err != nil {
		t.Fatalf("spec runc cannot decode: %v\n%s", err, doc)
	}
	if view.Linux == nil {
		return false
	}
	for _, ns := range view.Linux.Namespaces {
		if ns.Type == "network" && ns.Path == "" {
			return true
		}
	}
	return false
}

// checkRuncSawABlocker: a change is only made when runc would have hit one.
func checkRuncSawABlocker(t *testing.T, doc []byte, want Adaptations) {
	var view runcView
	if err := json.Unmarshal(doc, &view); err != nil || view.Linux == nil {
		t.Fatalf("changed a spec without namespaces as runc reads it (%v): %s", err, doc)
	}
	for _, ns := range view.Linux.Namespaces {
		if want.DropCgroupNamespace && ns.Type == "cgroup" ||
			want.PidNamespacePerContainer && ns.Type == "pid" && ns.Path != "" {
			return
		}
	}
	t.Fatalf("changed a spec runc would have run as it was: %s", doc)
}

// maskView decodes a spec's masked and read-only paths as runc does.
type maskView struct {
	Linux *struct {
		MaskedPaths   []string `json:"maskedPaths"`
		ReadonlyPaths []string `json:"readonlyPaths"`
	} `json:"linux"`
}

// checkMaskUnderReadonly: a B14 refusal names a masked and a read-only path
// of the spec, as runc reads it, and the one does lie within the other.
func checkMaskUnderReadonly(t *testing.T, doc []byte, e B14Error) {
	var view maskView
	if err := json.Unmarshal(doc, &view); err != nil || view.Linux == nil {
		t.Fatalf("B14 refusal of a spec runc reads otherwise (%v): %s", err, doc)
	}
	if !contains(view.Linux.MaskedPaths, e.Masked) || !contains(view.Linux.ReadonlyPaths, e.Readonly) ||
		!oracleWithin(e.Masked, e.Readonly) {
		t.Fatalf("B14 refusal %+v of %s", e, doc)
	}
}

// checkNoMaskUnderReadonly: a spec let through nests no masked path in a
// read-only path, neither as runc reads it (encoding/json: keys in any
// case, the last duplicate) nor as crun does (the first key spelled
// exactly so, a list of another type ignored, an element that is not a
// string read as "").
func checkNoMaskUnderReadonly(t *testing.T, out []byte) {
	var view maskView
	if err := json.Unmarshal(out, &view); err != nil {
		t.Fatalf("let through a spec whose paths runc cannot decode: %v\n%s", err, out)
	}
	if view.Linux != nil {
		if m, r, ok := oracleNested(view.Linux.MaskedPaths, view.Linux.ReadonlyPaths); ok {
			t.Fatalf("runc would mask %q inside the read-only %q: %s", m, r, out)
		}
	}
	tree := decodeOrdered(t, out)
	linux, _ := firstExact(tree, "linux").([]keyValue)
	if m, r, ok := oracleNested(crunPaths(firstExact(linux, "maskedPaths")), crunPaths(firstExact(linux, "readonlyPaths"))); ok {
		t.Fatalf("crun would mask %q inside the read-only %q: %s", m, r, out)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func oracleNested(masked, readonly []string) (string, string, bool) {
	for _, m := range masked {
		for _, r := range readonly {
			if oracleWithin(m, r) {
				return m, r, true
			}
		}
	}
	return "", "", false
}

// oracleWithin resolves both paths component by component, as a lookup
// beneath the container's root would ("" and "." stay, ".." goes up but
// not above the root), and compares the components.
func oracleWithin(p, dir string) bool {
	pc, dc := components(p), components(dir)
	if len(dc) > len(pc) {
		return false
	}
	for i := range dc {
		if dc[i] != pc[i] {
			return false
		}
	}
	return true
}

func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

// keyValue is one member of an object decoded with its duplicates, in order.
type keyValue struct {
	key   string
	value interface{}
}

// decodeOrdered decodes JSON keeping every member of every object, as
// yajl's tree (crun's parser) does.
func decodeOrdered(t *testing.T, doc []byte) interface{} {
	dec := json.NewDecoder(bytes.NewReader(doc))
	v, err := orderedValue(dec)
	if err != nil {
		t.Fatalf("decodeOrdered: %v", err)
	}
	return v
}

func orderedValue(dec *json.Decoder) (interface{}, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		object := []keyValue{}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			value, err := orderedValue(dec)
			if err != nil {
				return nil, err
			}
			object = append(object, keyValue{key.(string), value})
		}
		_, err = dec.Token()
		return object, err
	case json.Delim('['):
		array := []interface{}{}
		for dec.More() {
			value, err := orderedValue(dec)
			if err != nil {
				return nil, err
			}
			array = append(array, value)
		}
		_, err = dec.Token()
		return array, err
	case json.Delim('}'), json.Delim(']'):
		return nil, io.ErrUnexpectedEOF
	}
	return tok, nil
}

// firstExact is yajl_tree_get: the first member whose key is name, byte
// for byte; nil when v is not an object or has none.
func firstExact(v interface{}, name string) interface{} {
	object, _ := v.([]keyValue)
	for _, kv := range object {
		if kv.key == name {
			return kv.value
		}
	}
	return nil
}

// crunPaths is a list of paths as libocispec reads one: not a list means
// none, an element that is not a string is "".
func crunPaths(v interface{}) []string {
	list, _ := v.([]interface{})
	paths := make([]string, len(list))
	for i, e := range list {
		paths[i], _ = e.(string)
	}
	return paths
}
