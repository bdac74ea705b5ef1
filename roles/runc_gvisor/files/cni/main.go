// Command gvisor-bridge is a CNI plugin for hosts whose network stack is
// gVisor's: it gives each pod a veth on a bridge using only the netlink
// operations gVisor supports (see internal/bridge and docs/NETWORK.md).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"k3s-gvisor/gvisor-bridge/internal/bridge"
	"k3s-gvisor/gvisor-bridge/internal/cni"
)

// Set at build time with -ldflags "-X main.version=..." (the build's cache key).
var version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Printf("gvisor-bridge %s, CNI spec versions %s\n", version, strings.Join(cni.SupportedVersions, ", "))
		return
	}
	os.Exit(run(os.Getenv, os.Stdin, os.Stdout))
}

// run does one CNI call and returns the exit status: 0, or 1 with a CNI
// error on stdout.
func run(getenv func(string) string, stdin io.Reader, stdout io.Writer) int {
	out, err := dispatch(getenv, stdin)
	if err != nil {
		return fail(stdout, err)
	}
	if out != nil {
		_, _ = stdout.Write(append(out, '\n'))
	}
	return 0
}

func dispatch(getenv func(string) string, stdin io.Reader) ([]byte, error) {
	env, err := cni.ReadEnv(getenv)
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(stdin)
	if err != nil {
		return nil, cni.Errorf(cni.CodeIOFailure, "read the network configuration from stdin: %v", err)
	}
	if env.Command == "VERSION" {
		return json.Marshal(map[string]interface{}{"cniVersion": "1.0.0", "supportedVersions": cni.SupportedVersions})
	}
	conf, err := cni.ParseNetConf(raw)
	if err != nil {
		return nil, err
	}
	switch env.Command {
	case "ADD":
		result, err := bridge.Add(env, conf, raw)
		if err != nil {
			return nil, withVersion(err, conf.CNIVersion)
		}
		return result.Encode(conf.CNIVersion)
	case "DEL":
		return nil, withVersion(bridge.Del(env, conf, raw), conf.CNIVersion)
	default: // CHECK
		return nil, withVersion(bridge.Check(env, conf, raw), conf.CNIVersion)
	}
}

func withVersion(err error, version string) error {
	if cniErr, ok := err.(*cni.Error); ok {
		cniErr.CNIVersion = version
	}
	return err
}

func fail(stdout io.Writer, err error) int {
	cniErr, ok := err.(*cni.Error)
	if !ok {
		cniErr = cni.Errorf(cni.CodeIOFailure, "%v", err)
	}
	if cniErr.CNIVersion == "" {
		cniErr.CNIVersion = "1.0.0"
	}
	out, _ := json.Marshal(cniErr)
	_, _ = stdout.Write(append(out, '\n'))
	return 1
}
