// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"encoding/json"
	"errors"
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
		DropCgroupNamespace:      bits&1 != 0,
		PidNamespacePerContainer: bits&2 != 0,
		RefusePidNamespaceJoin:   bits&4 != 0,
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
	} {
		f.Add([]byte(seed), uint8(7))
		f.Add([]byte(seed), uint8(1))
	}
	f.Add(readFixture(f, "cri-config.json"), uint8(3))
	f.Add(readFixture(f, "runc-spec.json"), uint8(5))
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
		if changes.Changed() {
			checkRuncSawABlocker(t, doc, want)
		}
	})
}

// checkRefusal accepts only the errors Adapt documents for valid JSON.
func checkRefusal(t *testing.T, doc []byte, want Adaptations, err error) {
	var b9 B9Error
	var spec SpecError
	switch {
	case errors.As(err, &b9):
		if !want.RefusePidNamespaceJoin || want.PidNamespacePerContainer {
			t.Fatalf("B9 refusal with %+v", want)
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
