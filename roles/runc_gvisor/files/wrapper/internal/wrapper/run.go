// SPDX-License-Identifier: Apache-2.0

// Package wrapper is runc-gvisor: it stands where containerd's runc shim
// expects runc, adapts a new container's config.json to what this gVisor
// host can do (the adaptations the host profile lists), and execs the real
// runc with the same arguments.
//
// It sits on every runc call the shim makes, so a call that does not create
// a container (state, kill, delete, exec, ...) does the least possible: parse
// argv, read the profile, exec. Only create and run read config.json.
package wrapper

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Build holds what is fixed when the binary is built.
type Build struct {
	DefaultProfilePath string
	Version            string
}

// Wrapper runs one invocation. Its fields are the outside world, so tests
// can replace them.
type Wrapper struct {
	Build  Build
	Stdout io.Writer // only for --runc-gvisor-info: the shim parses runc's stdout
	Stderr io.Writer
	Exec   func(path string, argv []string, env []string) error
	Now    func() time.Time
}

// Main runs the wrapper for the real process and returns its exit code.
func Main(argv []string, build Build) int {
	w := Wrapper{Build: build, Stdout: os.Stdout, Stderr: os.Stderr, Exec: syscall.Exec, Now: time.Now}
	return w.Run(argv)
}

// Run handles argv (program name first). It only returns when the real runc
// could not be started, or in tests where Exec returns.
func (w Wrapper) Run(argv []string) int {
	inv := ParseArgs(argv[1:])
	profilePath := ProfilePath(w.Build.DefaultProfilePath)
	if inv.Info {
		return w.printInfo(profilePath)
	}
	profile, err := LoadProfile(profilePath)
	if err != nil {
		return w.fail(inv, err)
	}
	if inv.AdaptsSpec() {
		if err := w.adaptSpec(inv, profile, profilePath); err != nil {
			return w.fail(inv, err)
		}
	}
	runcArgv := append([]string{profile.Runc}, argv[1:]...)
	if err := w.Exec(profile.Runc, runcArgv, os.Environ()); err != nil {
		return w.fail(inv, realRuncError(profile.Runc, profilePath, err))
	}
	return 0 // syscall.Exec does not return on success; a test double does
}

// adaptSpec rewrites the bundle's config.json before create or run. The real
// runc is checked first so that a broken install leaves the spec untouched.
func (w Wrapper) adaptSpec(inv Invocation, profile Profile, profilePath string) error {
	want, err := profile.ParseAdaptations()
	if err != nil {
		return err
	}
	if err := syscall.Access(profile.Runc, 1 /* X_OK */); err != nil {
		return realRuncError(profile.Runc, profilePath, err)
	}
	bundle := inv.Bundle
	if bundle == "" { // runc's default
		if bundle, err = os.Getwd(); err != nil {
			return fmt.Errorf("bundle: the working directory: %w", err)
		}
	}
	changes, err := AdaptBundle(bundle, want)
	if err != nil {
		return err
	}
	if changes.Changed() {
		w.log(inv, "info", changes.Summary())
	}
	return nil
}

func realRuncError(runc, profilePath string, err error) error {
	return fmt.Errorf("real runc %s (from host profile %s): %w", runc, profilePath, err)
}

// fail reports an error the way runc would: on stderr, and as an "error"
// line in runc's --log file, where containerd's shim looks for the reason.
func (w Wrapper) fail(inv Invocation, err error) int {
	msg := "runc-gvisor: " + err.Error()
	fmt.Fprintln(w.Stderr, msg)
	w.log(inv, "error", msg)
	return 1
}

// log appends to runc's --log file when there is one. It never writes to
// stdout. A log that cannot be written is not worth failing a container for.
func (w Wrapper) log(inv Invocation, level, msg string) {
	if inv.LogFile == "" {
		return
	}
	if err := appendLog(inv.LogFile, LogLine(inv.LogFormat, level, msg, w.Now())); err != nil {
		fmt.Fprintf(w.Stderr, "runc-gvisor: cannot write to --log %s: %v\n", inv.LogFile, err)
	}
}

// Info is what --runc-gvisor-info prints, for the role to check an install.
type Info struct {
	Version          string   `json:"version"`
	GoVersion        string   `json:"go_version"`
	ProfilePath      string   `json:"profile_path"`
	Profile          *Profile `json:"profile"`
	RuncExecutable   bool     `json:"runc_executable"`
	KnownAdaptations []string `json:"known_adaptations"`
	Errors           []string `json:"errors"`
}

// printInfo prints Info as JSON on stdout and exits 0 only when the
// profile is complete: readable, every adaptation known, real runc there.
func (w Wrapper) printInfo(profilePath string) int {
	info := Info{
		Version: w.Build.Version, GoVersion: runtime.Version(),
		ProfilePath: profilePath, KnownAdaptations: KnownAdaptations(), Errors: []string{},
	}
	if profile, err := LoadProfile(profilePath); err != nil {
		info.Errors = append(info.Errors, err.Error())
	} else {
		info.Profile = &profile
		if _, err := profile.ParseAdaptations(); err != nil {
			info.Errors = append(info.Errors, err.Error())
		}
		if err := syscall.Access(profile.Runc, 1 /* X_OK */); err != nil {
			info.Errors = append(info.Errors, realRuncError(profile.Runc, profilePath, err).Error())
		} else {
			info.RuncExecutable = true
		}
	}
	out, _ := json.MarshalIndent(info, "", "  ")
	fmt.Fprintln(w.Stdout, string(out))
	if len(info.Errors) > 0 {
		return 1
	}
	return 0
}
