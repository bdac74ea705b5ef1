// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

var (
	dropCgroup  = Adaptations{DropCgroupNamespace: true}
	hostWithB9  = Adaptations{DropCgroupNamespace: true, RefusePidNamespaceJoin: true}
	pidPerCtr   = Adaptations{DropCgroupNamespace: true, PidNamespacePerContainer: true, RefusePidNamespaceJoin: true}
	everything  = pidPerCtr
	noneWanted  = Adaptations{}
	cgroupEntry = `{"type":"cgroup"}`
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustAdapt(t *testing.T, doc string, want Adaptations) (string, Changes) {
	t.Helper()
	out, changes, err := Adapt([]byte(doc), want)
	if err != nil {
		t.Fatalf("Adapt(%s): %v", doc, err)
	}
	return string(out), changes
}

// A CRI spec as containerd writes it (compact): dropping the cgroup
// namespace removes exactly that entry and its comma, nothing else.
func TestAdaptCRISpecChangesOnlyTheCgroupEntry(t *testing.T) {
	in := readFixture(t, "cri-config.json")
	if !bytes.Contains(in, []byte(`,`+cgroupEntry+`]`)) {
		t.Fatal("fixture lost its cgroup namespace")
	}
	out, changes := mustAdapt(t, string(in), dropCgroup)
	want := strings.Replace(string(in), `,`+cgroupEntry, "", 1)
	if out != want {
		t.Errorf("output differs from the input minus the cgroup entry:\n%s", out)
	}
	if changes.DroppedCgroupNamespaces != 1 || len(changes.PidNamespaceJoinsDenied) != 0 {
		t.Errorf("changes = %+v", changes)
	}
	if got := changes.Summary(); got != "runc-gvisor: adapted spec: dropped cgroup namespace (B1)" {
		t.Errorf("summary = %q", got)
	}
}

// An indented spec (runc spec's own output) keeps its layout byte for byte,
// wherever the cgroup entry sat in the list.
func TestAdaptIndentedSpecKeepsLayout(t *testing.T) {
	original := string(readFixture(t, "runc-spec.json"))
	const indentedCgroup = "{\n\t\t\t\t\"type\": \"cgroup\"\n\t\t\t}"
	positions := map[string]struct{ old, new string }{
		"first":  {"[\n\t\t\t{\n\t\t\t\t\"type\": \"pid\"", "[\n\t\t\t" + indentedCgroup + ",\n\t\t\t{\n\t\t\t\t\"type\": \"pid\""},
		"middle": {"{\n\t\t\t\t\"type\": \"uts\"", indentedCgroup + ",\n\t\t\t{\n\t\t\t\t\"type\": \"uts\""},
		"last":   {"\"type\": \"mount\"\n\t\t\t}", "\"type\": \"mount\"\n\t\t\t},\n\t\t\t" + indentedCgroup},
	}
	for name, p := range positions {
		t.Run(name, func(t *testing.T) {
			in := strings.Replace(original, p.old, p.new, 1)
			if in == original {
				t.Fatal("the cgroup entry was not inserted")
			}
			out, _ := mustAdapt(t, in, dropCgroup)
			if out != original {
				t.Errorf("got\n%s\nwant runc spec's original bytes", out)
			}
		})
	}
}

func TestAdaptNamespaces(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" means unchanged
		with Adaptations
	}{
		{"only cgroup", `{"linux":{"namespaces":[{"type":"cgroup"}]}}`, `{"linux":{"namespaces":[]}}`, dropCgroup},
		{"cgroup first", `{"linux":{"namespaces":[{"type":"cgroup"},{"type":"pid"}]}}`, `{"linux":{"namespaces":[{"type":"pid"}]}}`, dropCgroup},
		{"two cgroup entries", `{"linux":{"namespaces":[{"type":"cgroup"},{"type":"net"},{"type":"cgroup"}]}}`, `{"linux":{"namespaces":[{"type":"net"}]}}`, dropCgroup},
		{"cgroup with a path", `{"linux":{"namespaces":[{"type":"net"},{"type":"cgroup","path":"/proc/1/ns/cgroup"}]}}`, `{"linux":{"namespaces":[{"type":"net"}]}}`, dropCgroup},
		{"no cgroup", `{"linux":{"namespaces":[{"type":"pid"},{"type":"net"}]}}`, "", dropCgroup},
		{"not wanted", `{"linux":{"namespaces":[{"type":"cgroup"}]}}`, "", noneWanted},
		{"unknown fields kept", `{"x-top":{"a":[1,2]},"linux":{"x-linux":true,"namespaces":[{"type":"net","x-ns":"k"},{"type":"cgroup","x-ns":1}],"sysctl":{}},"z":null}`,
			`{"x-top":{"a":[1,2]},"linux":{"x-linux":true,"namespaces":[{"type":"net","x-ns":"k"}],"sysctl":{}},"z":null}`, dropCgroup},
		{"spaces kept", " {\"linux\" : { \"namespaces\" : [ {\"type\":\"net\"} , {\"type\":\"cgroup\"} ] } } \n", " {\"linux\" : { \"namespaces\" : [ {\"type\":\"net\"} ] } } \n", dropCgroup},
		{"no linux", `{"ociVersion":"1.2.0","process":{"args":["sh"]}}`, "", everything},
		{"linux null", `{"linux":null}`, "", everything},
		{"no namespaces", `{"linux":{"resources":{}}}`, "", everything},
		{"namespaces null", `{"linux":{"namespaces":null}}`, "", everything},
		{"namespaces empty", `{"linux":{"namespaces":[]}}`, "", everything},
		{"null entry kept", `{"linux":{"namespaces":[null,{"type":"cgroup"}]}}`, `{"linux":{"namespaces":[null]}}`, dropCgroup},
		{"type null", `{"linux":{"namespaces":[{"type":null}]}}`, "", everything},
		{"a string that merely says cgroup", `{"linux":{"namespaces":[{"type":"net","path":"cgroup"}],"cgroupsPath":"cgroup"},"cgroup":{"type":"cgroup"}}`, "", dropCgroup},
		{"nested linux untouched", `{"annotations":{"linux":{"namespaces":[{"type":"cgroup"}]}}}`, "", dropCgroup},
		// runc reads config.json with encoding/json into structs, so it
		// matches keys case-insensitively, unescapes them, and lets a
		// later duplicate win: all of these reach runc as a cgroup namespace.
		{"keys in other cases", `{"Linux":{"NameSpaces":[{"TYPE":"cgroup"},{"Type":"pid"}]}}`, `{"Linux":{"NameSpaces":[{"Type":"pid"}]}}`, dropCgroup},
		{"escaped key and value", `{"linu\u0078":{"namespaces":[{"type":"cgr\u006fup"},{"type":"ipc"}]}}`, `{"linu\u0078":{"namespaces":[{"type":"ipc"}]}}`, dropCgroup},
		{"duplicate type, last wins", `{"linux":{"namespaces":[{"type":"net","type":"cgroup"},{"type":"cgroup","type":"net"}]}}`, `{"linux":{"namespaces":[{"type":"cgroup","type":"net"}]}}`, dropCgroup},
		{"duplicate type, null keeps the first", `{"linux":{"namespaces":[{"type":"cgroup","type":null}]}}`, `{"linux":{"namespaces":[]}}`, dropCgroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changes := mustAdapt(t, tt.in, tt.with)
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if out != want {
				t.Errorf("\n got %s\nwant %s", out, want)
			}
			if changes.Changed() != (tt.want != "") {
				t.Errorf("Changed() = %v", changes.Changed())
			}
			assertOnlyNamespacesDiffer(t, []byte(tt.in), []byte(out))
			assertIdempotent(t, []byte(out), tt.with)
		})
	}
}

func TestRefuseNewNetworkNamespace(t *testing.T) {
	refuse := Adaptations{DropCgroupNamespace: true, RefuseNewNetworkNamespace: true}
	t.Run("a new network namespace is refused, naming B22", func(t *testing.T) {
		for _, spec := range []string{
			`{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}`,
			`{"linux":{"namespaces":[{"type":"network","path":""}]}}`,
			// runc's decoder: keys in any case, the later duplicate wins.
			`{"linux":{"namespaces":[{"TYPE":"network","path":"/var/run/netns/x","Path":""}]}}`,
		} {
			_, _, err := Adapt([]byte(spec), refuse)
			var b22 B22Error
			if !errors.As(err, &b22) {
				t.Fatalf("%s: err = %v, want B22Error", spec, err)
			}
			for _, words := range []string{"blocker B22", "SIOCSIFFLAGS", "--with-ns network:", "--net-host"} {
				if !strings.Contains(err.Error(), words) {
					t.Errorf("message %q lacks %q", err, words)
				}
			}
		}
	})
	t.Run("joining one, as pods do, is not", func(t *testing.T) {
		const pod = `{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}`
		if out, _ := mustAdapt(t, pod, refuse); out != pod {
			t.Errorf("got %s", out)
		}
	})
	t.Run("left alone where the runtime can", func(t *testing.T) {
		const own = `{"linux":{"namespaces":[{"type":"network"}]}}`
		if out, _ := mustAdapt(t, own, noneWanted); out != own {
			t.Errorf("got %s", out)
		}
	})
}

func TestAdaptPidNamespace(t *testing.T) {
	const join = `{"linux":{"namespaces":[{"type":"pid","path":"/proc/42/ns/pid"},{"type":"ipc","path":"/proc/42/ns/ipc"},{"type":"cgroup"}]}}`
	t.Run("own namespace when pid_namespace_per_container", func(t *testing.T) {
		out, changes := mustAdapt(t, join, pidPerCtr)
		want := `{"linux":{"namespaces":[{"type":"pid"},{"type":"ipc","path":"/proc/42/ns/ipc"}]}}`
		if out != want {
			t.Errorf("\n got %s\nwant %s", out, want)
		}
		if !reflect.DeepEqual(changes.PidNamespaceJoinsDenied, []string{"/proc/42/ns/pid"}) || changes.DroppedCgroupNamespaces != 1 {
			t.Errorf("changes = %+v", changes)
		}
		wantSummary := "runc-gvisor: adapted spec: dropped cgroup namespace (B1); gave the container its own PID namespace instead of joining /proc/42/ns/pid (B9, pid_namespace_per_container)"
		if changes.Summary() != wantSummary {
			t.Errorf("summary = %q", changes.Summary())
		}
	})
	t.Run("refused on a host with B9", func(t *testing.T) {
		_, _, err := Adapt([]byte(join), hostWithB9)
		var b9 B9Error
		if !errors.As(err, &b9) || b9.Path != "/proc/42/ns/pid" {
			t.Fatalf("err = %v, want B9Error", err)
		}
		for _, words := range []string{"blocker B9", "cannot join an existing PID namespace", "shareProcessNamespace", PidNamespacePerContainer} {
			if !strings.Contains(err.Error(), words) {
				t.Errorf("message %q lacks %q", err, words)
			}
		}
	})
	t.Run("left alone when neither is listed", func(t *testing.T) {
		out, _ := mustAdapt(t, join, noneWanted)
		if out != join {
			t.Errorf("got %s", out)
		}
	})
	tests := []struct{ name, in, want string }{
		{"path first", `{"linux":{"namespaces":[{"path":"/proc/7/ns/pid","type":"pid"}]}}`, `{"linux":{"namespaces":[{"type":"pid"}]}}`},
		{"other fields kept", `{"linux":{"namespaces":[{"type":"pid","x":1,"path":"/proc/7/ns/pid","y":2}]}}`, `{"linux":{"namespaces":[{"type":"pid","x":1,"y":2}]}}`},
		{"indented", "{\"linux\": {\"namespaces\": [\n  {\n    \"type\": \"pid\",\n    \"path\": \"/proc/7/ns/pid\"\n  }\n]}}", "{\"linux\": {\"namespaces\": [\n  {\n    \"type\": \"pid\"\n  }\n]}}"},
		{"Path in another case", `{"linux":{"namespaces":[{"type":"pid","Path":"/proc/7/ns/pid"}]}}`, `{"linux":{"namespaces":[{"type":"pid"}]}}`},
		{"own pid namespace already", `{"linux":{"namespaces":[{"type":"pid"}]}}`, ""},
		{"empty path is its own", `{"linux":{"namespaces":[{"type":"pid","path":""}]}}`, ""},
		{"other types keep their paths", `{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-1"}]}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _ := mustAdapt(t, tt.in, pidPerCtr)
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if out != want {
				t.Errorf("\n got %s\nwant %s", out, want)
			}
			assertIdempotent(t, []byte(out), pidPerCtr)
			if _, _, err := Adapt([]byte(out), hostWithB9); err != nil {
				t.Errorf("the adapted spec is still refused: %v", err)
			}
		})
	}
}

func TestAdaptRejectsMalformedSpecs(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"invalid JSON", `{"linux":{"namespaces":[{"type":"cgroup"},]}}`, "invalid JSON at offset 43: invalid character ']' looking for beginning of value"},
		{"truncated", `{"linux":{"namespa`, "invalid JSON at offset 18: unexpected end of JSON input"},
		{"empty", ``, "invalid JSON at offset 0: unexpected end of JSON input"},
		{"two values", `{} {}`, "invalid JSON at offset 4: invalid character '{' after top-level value"},
		{"top level not an object", `[{"type":"cgroup"}]`, "the spec is not a JSON object"},
		{"top level null", `null`, "the spec is not a JSON object"},
		{"linux not an object", `{"linux":[]}`, "linux is not an object"},
		{"namespaces an object", `{"linux":{"namespaces":{"type":"cgroup"}}}`, "linux.namespaces is not a list"},
		{"namespaces a string", `{"linux":{"namespaces":"cgroup"}}`, "linux.namespaces is not a list"},
		{"entry not an object", `{"linux":{"namespaces":[{"type":"pid"},"cgroup"]}}`, "linux.namespaces[1]: not an object"},
		{"type not a string", `{"linux":{"namespaces":[{"type":1}]}}`, "linux.namespaces[0]: type is not a string"},
		// runc's decoder would merge these (see onlyMemberNamed).
		{"duplicate linux sections", `{"linux":{"namespaces":[{"type":"cgroup"}]},"Linux":{}}`, `"linux" and "Linux": the same member twice`},
		{"duplicate namespaces lists", `{"linux":{"namespaces":[{"type":"cgroup","path":"/p"}],"namespaces":[{"type":"pid"}]}}`, `"namespaces" and "namespaces": the same member twice`},
		{"path not a string", `{"linux":{"namespaces":[{"type":"pid","path":{}}]}}`, "linux.namespaces[0]: path is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := Adapt([]byte(tt.in), everything)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if out != nil {
				t.Errorf("output on error: %s", out)
			}
		})
	}
}

func TestAdaptTwiceEqualsOnce(t *testing.T) {
	for _, name := range []string{"cri-config.json", "runc-spec.json"} {
		in := readFixture(t, name)
		once, _, err := Adapt(in, everything)
		if err != nil {
			t.Fatal(err)
		}
		assertIdempotent(t, once, everything)
	}
}

// assertIdempotent checks that adapting an adapted spec changes nothing.
func assertIdempotent(t testing.TB, adapted []byte, want Adaptations) {
	t.Helper()
	again, changes, err := Adapt(adapted, want)
	if err != nil {
		t.Fatalf("second Adapt failed: %v", err)
	}
	if changes.Changed() || !bytes.Equal(again, adapted) {
		t.Fatalf("second Adapt changed %s\ninto %s (%+v)", adapted, again, changes)
	}
}

// assertOnlyNamespacesDiffer checks that in and out decode to the same
// value once every linux.namespaces member is left out of both.
func assertOnlyNamespacesDiffer(t testing.TB, in, out []byte) {
	t.Helper()
	a, b := withoutNamespaces(t, in), withoutNamespaces(t, out)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("more than linux.namespaces changed:\n in %s\nout %s", in, out)
	}
}

func withoutNamespaces(t testing.TB, doc []byte) interface{} {
	t.Helper()
	var v interface{}
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, doc)
	}
	top, _ := v.(map[string]interface{})
	for key, linux := range top {
		section, ok := linux.(map[string]interface{})
		if !strings.EqualFold(key, "linux") || !ok {
			continue
		}
		for k := range section {
			if strings.EqualFold(k, "namespaces") {
				delete(section, k)
			}
		}
	}
	return v
}

var refuseB14 = Adaptations{DropCgroupNamespace: true, RefuseMaskedUnderReadonly: true}

// linuxWith is a spec whose linux section holds the given members besides
// a cgroup namespace (so that a spec let through is also changed).
func linuxWith(members string) string {
	return `{"ociVersion":"1.2.1","linux":{` + members + `,"namespaces":[{"type":"pid"},{"type":"cgroup"}]}}`
}

func TestRefuseMaskedUnderReadonly(t *testing.T) {
	tests := []struct {
		name    string
		members string // inside linux
		masked  string // the refusal's masked path as written; "" means let through
		under   string // and its read-only path
	}{
		{"nested", `"maskedPaths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys"]`, "/proc/sys/kernel", "/proc/sys"},
		{"the same path", `"maskedPaths":["/proc/sys"],"readonlyPaths":["/proc/sys"]`, "/proc/sys", "/proc/sys"},
		{"deeper", `"maskedPaths":["/proc/sys/fs/binfmt_misc"],"readonlyPaths":["/proc/sys"]`, "/proc/sys/fs/binfmt_misc", "/proc/sys"},
		{"the first nested pair is named", `"maskedPaths":["/proc/kcore","/sys/firmware","/proc/sys/kernel","/proc/fs/nfs"],"readonlyPaths":["/proc/bus","/proc/fs","/proc/sys"]`, "/proc/sys/kernel", "/proc/sys"},
		// Component-wise, not a string prefix.
		{"a sibling with the readonly path as its prefix", `"maskedPaths":["/proc/sysrq-trigger"],"readonlyPaths":["/proc/sys"]`, "", ""},
		{"a sibling that is a prefix", `"maskedPaths":["/proc/sys"],"readonlyPaths":["/proc/sysrq-trigger"]`, "", ""},
		{"masked above the readonly path", `"maskedPaths":["/proc/sys"],"readonlyPaths":["/proc/sys/kernel"]`, "", ""},
		{"disjoint", `"maskedPaths":["/sys/firmware"],"readonlyPaths":["/proc/sys"]`, "", ""},
		// Normalised as the runtimes resolve them; named as written.
		{"readonly with a trailing slash", `"maskedPaths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys/"]`, "/proc/sys/kernel", "/proc/sys/"},
		{"masked with a trailing slash", `"maskedPaths":["/proc/sys/kernel/"],"readonlyPaths":["/proc/sys"]`, "/proc/sys/kernel/", "/proc/sys"},
		{"relative", `"maskedPaths":["proc/sys/kernel"],"readonlyPaths":["proc/sys"]`, "proc/sys/kernel", "proc/sys"},
		{"doubled slashes and dots", `"maskedPaths":["//proc/./sys//kernel"],"readonlyPaths":["/proc/sys"]`, "//proc/./sys//kernel", "/proc/sys"},
		{"dot-dot back inside", `"maskedPaths":["/proc/sys/../sys/kernel"],"readonlyPaths":["/proc/sys"]`, "/proc/sys/../sys/kernel", "/proc/sys"},
		{"dot-dot onto the readonly path", `"maskedPaths":["/proc/sys/kernel/.."],"readonlyPaths":["/proc/sys"]`, "/proc/sys/kernel/..", "/proc/sys"},
		{"dot-dot out of it", `"maskedPaths":["/proc/sys/.."],"readonlyPaths":["/proc/sys"]`, "", ""},
		{"dot-dot cannot climb above the root", `"maskedPaths":["/../../proc/sys/fs"],"readonlyPaths":["/proc/sys"]`, "/../../proc/sys/fs", "/proc/sys"},
		{"readonly root", `"maskedPaths":["/sys/firmware"],"readonlyPaths":["/"]`, "/sys/firmware", "/"},
		// crun opens "" (and a null, which it reads as "") as the root.
		{"readonly empty string is the root", `"maskedPaths":["/sys/firmware"],"readonlyPaths":[""]`, "/sys/firmware", ""},
		{"readonly null is the root", `"maskedPaths":["/sys/firmware"],"readonlyPaths":[null]`, "/sys/firmware", ""},
		{"masked root under a readonly path", `"maskedPaths":[""],"readonlyPaths":["/proc"]`, "", ""},
		// Keys and strings as runc's decoder reads them.
		{"escaped path", `"maskedPaths":["/proc/sys/\u006bernel"],"readonlyPaths":["\/proc\/sys"]`, "/proc/sys/kernel", "/proc/sys"},
		{"keys in other cases", `"MaskedPaths":["/proc/sys/kernel"],"READONLYPATHS":["/proc/sys"]`, "/proc/sys/kernel", "/proc/sys"},
		{"escaped key", `"masked\u0050aths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys"]`, "/proc/sys/kernel", "/proc/sys"},
		// Nothing to refuse.
		{"no readonly paths", `"maskedPaths":["/proc/sys/kernel"]`, "", ""},
		{"no masked paths", `"readonlyPaths":["/proc/sys"]`, "", ""},
		{"null lists", `"maskedPaths":null,"readonlyPaths":null`, "", ""},
		{"empty lists", `"maskedPaths":[],"readonlyPaths":[]`, "", ""},
		{"a masked path only under readonly elsewhere in the spec", `"maskedPaths":["/proc/sys/kernel"],"x":{"readonlyPaths":["/proc/sys"]}`, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := linuxWith(tt.members)
			out, changes, err := Adapt([]byte(in), refuseB14)
			if tt.masked == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if changes.DroppedCgroupNamespaces != 1 {
					t.Errorf("changes = %+v", changes)
				}
				assertOnlyNamespacesDiffer(t, []byte(in), out)
				assertIdempotent(t, out, refuseB14)
				return
			}
			var b14 B14Error
			if !errors.As(err, &b14) || b14 != (B14Error{tt.masked, tt.under}) {
				t.Fatalf("err = %v, want B14Error{%q, %q}", err, tt.masked, tt.under)
			}
			if out != nil {
				t.Errorf("output on refusal: %s", out)
			}
			// The same spec where the host has no B14 is only adapted.
			if _, _, err := Adapt([]byte(in), dropCgroup); err != nil {
				t.Errorf("refused without the adaptation: %v", err)
			}
		})
	}
}

// containerd's CRI spec (its 11 masked and 5 read-only paths) and runc
// spec's own nest nothing: both pass, and only the namespaces change.
func TestRefuseMaskedUnderReadonlyPassesTheDefaultSpecs(t *testing.T) {
	for _, name := range []string{"cri-config.json", "runc-spec.json"} {
		in := readFixture(t, name)
		if !bytes.Contains(in, []byte(`"maskedPaths"`)) || !bytes.Contains(in, []byte(`"readonlyPaths"`)) {
			t.Fatalf("%s lost its masked or read-only paths", name)
		}
		without, _, err := Adapt(in, everything)
		if err != nil {
			t.Fatal(err)
		}
		with, _, err := Adapt(in, withB14(everything))
		if err != nil || !bytes.Equal(with, without) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func withB14(a Adaptations) Adaptations {
	a.RefuseMaskedUnderReadonly = true
	return a
}

func TestB14Message(t *testing.T) {
	got := B14Error{"/proc/sys/kernel", "/proc/sys"}.Error()
	want := `blocker B14: on this host (gVisor) the runtime leaves a masked path inside a read-only path writable, ` +
		`and its masks share one directory between containers; the container masks "/proc/sys/kernel" (linux.maskedPaths) ` +
		`inside the read-only path "/proc/sys" (linux.readonlyPaths). Remove one of the two from the spec: ` +
		`containerd's default spec never nests them`
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	same := B14Error{"/proc/sys/", "/proc/sys"}.Error()
	if !strings.Contains(same, `masks "/proc/sys/" (linux.maskedPaths), which is also the read-only path "/proc/sys" (linux.readonlyPaths). `) {
		t.Errorf("the same path: %s", same)
	}
	// One line, whatever the spec holds.
	if odd := (B14Error{"/a\nb", "/a"}).Error(); strings.ContainsAny(odd, "\n\r") {
		t.Errorf("not one line: %q", odd)
	}
}

func TestRefuseMaskedUnderReadonlyRejectsMalformedLists(t *testing.T) {
	tests := []struct{ name, members, wantErr string }{
		{"maskedPaths a string", `"maskedPaths":"/proc/kcore"`, "linux.maskedPaths is not a list"},
		{"readonlyPaths an object", `"maskedPaths":[],"readonlyPaths":{"/proc/sys":true}`, "linux.readonlyPaths is not a list"},
		{"an element not a string", `"maskedPaths":["/proc/kcore",1]`, "linux.maskedPaths[1]: not a string"},
		{"a readonly element a list", `"readonlyPaths":[["/proc/sys"]]`, "linux.readonlyPaths[0]: not a string"},
		// runc would take the later list, crun the earlier: refused either way.
		{"two maskedPaths", `"maskedPaths":["/proc/sys/kernel"],"readonlyPaths":["/proc/sys"],"maskedPaths":[]`, `"maskedPaths" and "maskedPaths": the same member twice`},
		{"two readonlyPaths in different cases", `"readonlyPaths":["/proc/sys"],"ReadonlyPaths":[],"maskedPaths":["/proc/sys/kernel"]`, `"readonlyPaths" and "ReadonlyPaths": the same member twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := linuxWith(tt.members)
			out, _, err := Adapt([]byte(in), refuseB14)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			var spec SpecError
			if !errors.As(err, &spec) || out != nil {
				t.Errorf("%T, output %s", err, out)
			}
			// Without the adaptation the wrapper does not read them.
			if _, _, err := Adapt([]byte(in), dropCgroup); err != nil {
				t.Errorf("without the adaptation: %v", err)
			}
		})
	}
}

func TestPathWithin(t *testing.T) {
	tests := []struct {
		p, dir string
		want   bool
	}{
		{"/proc/sys/kernel", "/proc/sys", true},
		{"/proc/sys", "/proc/sys", true},
		{"/proc/sys/", "/proc/sys", true},
		{"/proc/sys", "/proc/sys/", true},
		{"/proc/sysrq-trigger", "/proc/sys", false},
		{"/proc/sys", "/proc/sys/kernel", false},
		{"/proc", "/proc/sys", false},
		{"/anything", "/", true},
		{"/", "/", true},
		{"", "/", true},
		{"/", "", true},
		{"/sys", "", true},
		{"", "/proc", false},
		{"proc/sys/kernel", "/proc/sys", true},
		{"/proc/sys/kernel/..", "/proc/sys", true},
		{"/proc/sys/..", "/proc/sys", false},
		{"/..", "/", true},
		{"/../proc/sys/x", "/proc/sys", true},
		{"/proc/./sys", "/proc/sys/.", true},
		{"/proc/sys\x00/x", "/proc/sys", false},
	}
	for _, tt := range tests {
		if got := pathWithin(normalPath(tt.p), normalPath(tt.dir)); got != tt.want {
			t.Errorf("%q within %q = %v, want %v", tt.p, tt.dir, got, tt.want)
		}
	}
}
