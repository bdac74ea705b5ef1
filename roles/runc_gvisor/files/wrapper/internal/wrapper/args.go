// SPDX-License-Identifier: Apache-2.0

package wrapper

import "strings"

// Invocation is what the wrapper needs to know about one runc command line.
// Everything else in argv is runc's business and is passed on untouched.
type Invocation struct {
	Subcommand string // "" when argv has none (runc --version, runc --help)
	Bundle     string // as given; "" means runc's default, the working directory
	LogFile    string // runc's global --log
	LogFormat  string // runc's global --log-format ("text" when absent)
	Info       bool   // our own --runc-gvisor-info
}

// InfoFlag asks the wrapper itself (not runc) to describe what is installed.
const InfoFlag = "--runc-gvisor-info"

// runc's global flags that take a value. runc parses them with urfave/cli v1
// on top of Go's flag package, so "--log F", "--log=F", "-log F" and "-log=F"
// all mean the same. The others (--debug, --systemd-cgroup, --help,
// --version) are booleans: they never consume the next word.
var globalValueFlags = map[string]bool{
	"log": true, "log-format": true, "root": true, "criu": true, "rootless": true,
}

// Flags of create and run that take a value, so that a value such as
// "--pid-file -b" is not mistaken for the bundle flag.
var bundleCommandValueFlags = map[string]bool{
	"bundle": true, "b": true, "console-socket": true, "pid-file": true,
	"preserve-fds": true, "pidfd-socket": true,
}

// ParseArgs reads argv without the program name. containerd's shim (through
// go-runc) puts the global flags first, so the subcommand is the first word
// that is not a global flag or a global flag's value, never simply argv[1].
func ParseArgs(args []string) Invocation {
	inv := Invocation{LogFormat: "text"}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		name, value, hasValue, isFlag := splitFlag(arg)
		if !isFlag {
			break
		}
		if arg == InfoFlag {
			inv.Info = true
			continue
		}
		if globalValueFlags[name] && !hasValue && i+1 < len(args) {
			i++
			value, hasValue = args[i], true
		}
		inv.setGlobal(name, value, hasValue)
	}
	if i < len(args) {
		inv.Subcommand = args[i]
		if inv.AdaptsSpec() {
			inv.Bundle = findBundle(args[i+1:])
		}
	}
	return inv
}

func (inv *Invocation) setGlobal(name, value string, hasValue bool) {
	if !hasValue {
		return
	}
	switch name {
	case "log":
		inv.LogFile = value
	case "log-format":
		inv.LogFormat = value
	}
}

// AdaptsSpec says whether this call reads config.json to create a container.
// Every other subcommand works on a container that already exists.
func (inv Invocation) AdaptsSpec() bool {
	return inv.Subcommand == "create" || inv.Subcommand == "run"
}

// findBundle looks through all of create's or run's arguments, not only those
// before the container ID: urfave/cli v1 moves flags that follow positional
// arguments to the front, so runc accepts "create ID --bundle B" too.
func findBundle(args []string) string {
	bundle := ""
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			break
		}
		name, value, hasValue, isFlag := splitFlag(args[i])
		if !isFlag || !bundleCommandValueFlags[name] {
			continue
		}
		if !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		if name == "bundle" || name == "b" {
			bundle = value // the last one wins, as in Go's flag package
		}
	}
	return bundle
}

// splitFlag splits "-name", "--name", "-name=value" and "--name=value" the
// way Go's flag package does. A lone "-" is an argument, not a flag.
func splitFlag(arg string) (name, value string, hasValue, isFlag bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", "", false, false
	}
	name = strings.TrimPrefix(arg[1:], "-")
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue, true
}
