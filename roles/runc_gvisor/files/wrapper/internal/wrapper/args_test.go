// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"strings"
	"testing"
)

const (
	shimRoot   = "/run/containerd/runc/k8s.io"
	shimBundle = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3f9c1d7e"
	shimLog    = shimBundle + "/log.json"
)

// shimGlobals is what go-runc puts before every subcommand for containerd's
// runc shim.
var shimGlobals = "--root " + shimRoot + " --log " + shimLog + " --log-format json "

func TestParseArgs(t *testing.T) {
	shim := func(sub string, bundle string) Invocation {
		return Invocation{Subcommand: sub, Bundle: bundle, LogFile: shimLog, LogFormat: "json"}
	}
	plain := func(sub, bundle string) Invocation {
		return Invocation{Subcommand: sub, Bundle: bundle, LogFormat: "text"}
	}
	tests := []struct {
		name string
		argv string
		want Invocation
	}{
		// What containerd's shim runs, through go-runc.
		{"shim create", shimGlobals + "create --bundle " + shimBundle + " --pid-file " + shimBundle + "/init.pid 3f9c1d7e", shim("create", shimBundle)},
		{"shim create with console and systemd", "--root " + shimRoot + " --log " + shimLog + " --log-format json --systemd-cgroup create --bundle " + shimBundle + " --pid-file " + shimBundle + "/init.pid --console-socket /tmp/pty123/pty.sock --no-new-keyring 3f9c1d7e", shim("create", shimBundle)},
		{"shim start", shimGlobals + "start 3f9c1d7e", shim("start", "")},
		{"shim state", shimGlobals + "state 3f9c1d7e", shim("state", "")},
		{"shim kill", shimGlobals + "kill 3f9c1d7e 9", shim("kill", "")},
		{"shim kill all", shimGlobals + "kill --all 3f9c1d7e 15", shim("kill", "")},
		{"shim delete", shimGlobals + "delete --force 3f9c1d7e", shim("delete", "")},
		{"shim exec", shimGlobals + "exec --process /tmp/runc-process1234 --detach --pid-file " + shimBundle + "/exec1.pid 3f9c1d7e", shim("exec", "")},
		{"shim ps", shimGlobals + "ps --format json 3f9c1d7e", shim("ps", "")},
		{"shim update", shimGlobals + "update --resources - 3f9c1d7e", shim("update", "")},
		{"shim pause", shimGlobals + "pause 3f9c1d7e", shim("pause", "")},
		{"shim resume", shimGlobals + "resume 3f9c1d7e", shim("resume", "")},
		{"shim events", shimGlobals + "events --stats 3f9c1d7e", shim("events", "")},
		{"shim checkpoint", shimGlobals + "checkpoint --image-path /x 3f9c1d7e", shim("checkpoint", "")},
		// restore takes --bundle too, but only create and run are adapted.
		{"shim restore", shimGlobals + "restore --bundle " + shimBundle + " 3f9c1d7e", shim("restore", "")},
		{"features", "features", plain("features", "")},
		{"version", "--version", plain("", "")},
		{"help", "-h", plain("", "")},
		{"nothing", "", plain("", "")},
		// run, and the bundle's spellings.
		{"run no globals", "run --bundle /b ctr", plain("run", "/b")},
		{"run -b", "run -b /b ctr", plain("run", "/b")},
		{"run -b=", "run -b=/b ctr", plain("run", "/b")},
		{"run --bundle=", "run --bundle=/b ctr", plain("run", "/b")},
		{"run -bundle", "run -bundle /b ctr", plain("run", "/b")},
		{"run no bundle is cwd", "run ctr", plain("run", "")},
		{"create no bundle is cwd", shimGlobals + "create --pid-file /p ctr", shim("create", "")},
		{"create bundle after id", "create ctr --bundle /b", plain("create", "/b")},
		{"create last bundle wins", "create -b /a --bundle /b ctr", plain("create", "/b")},
		{"create value that looks like -b", "create --pid-file -b --bundle /b ctr", plain("create", "/b")},
		{"create --bundle= empty", "create --bundle= ctr", plain("create", "")},
		{"run detached", "run -d --bundle /b ctr", plain("run", "/b")},
		// Global flags in every spelling.
		{"globals = forms", "--root=/r --log=/l --log-format=json create --bundle /b c", Invocation{Subcommand: "create", Bundle: "/b", LogFile: "/l", LogFormat: "json"}},
		{"globals single dash", "-root /r -log /l -log-format json create -b /b c", Invocation{Subcommand: "create", Bundle: "/b", LogFile: "/l", LogFormat: "json"}},
		{"globals single dash =", "-log=/l -log-format=text run c", Invocation{Subcommand: "run", LogFile: "/l", LogFormat: "text"}},
		{"boolean globals", "--debug --systemd-cgroup --rootless false --criu /usr/sbin/criu create -b /b c", plain("create", "/b")},
		{"a global's value named create", "--root create state c", plain("state", "")},
		{"a global's value named run", "--log run --log-format json kill c 9", Invocation{Subcommand: "kill", LogFile: "run", LogFormat: "json"}},
		{"double dash ends globals", "--debug -- create -b /b c", plain("create", "/b")},
		{"double dash ends bundle flags", "run -- -b /b", plain("run", "")},
		{"lone dash is the subcommand", "- x", plain("-", "")},
		{"info flag", InfoFlag, Invocation{Info: true, LogFormat: "text"}},
		{"dangling global value", "--log", plain("", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseArgs(strings.Fields(tt.argv))
			if got != tt.want {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.argv, got, tt.want)
			}
		})
	}
}

func TestAdaptsSpecOnlyForCreateAndRun(t *testing.T) {
	for _, sub := range []string{"create", "run"} {
		if !(Invocation{Subcommand: sub}).AdaptsSpec() {
			t.Errorf("%s should adapt the spec", sub)
		}
	}
	for _, sub := range []string{"", "start", "state", "kill", "delete", "exec", "ps", "update", "pause", "resume", "events", "checkpoint", "restore", "features", "spec", "list"} {
		if (Invocation{Subcommand: sub}).AdaptsSpec() {
			t.Errorf("%q should pass through", sub)
		}
	}
}
