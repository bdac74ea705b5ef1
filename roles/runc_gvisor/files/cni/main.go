// Command gvisor-bridge is a CNI plugin for hosts whose network stack is
// gVisor's netstack: each pod gets a veth whose host end is on a bridge and
// whose other end, inside the pod's namespace, has an address from
// host-local's allocator (linked in) and a default route via the bridge.
//
// The standard bridge plugin fails there ("already exists but is not a
// bridge": gVisor's link dump does not report a link's kind) and so does ptp
// (gVisor cannot delete a route). So this plugin makes the bridge when it is
// absent and never reads its kind back, never reads a link's master back,
// and never deletes a route: DEL deletes the host end of the veth, and the
// pair and its routes go with it. See docs/NETWORK.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Set at build time with -ldflags "-X main.version=..." (the build's cache key).
var version = "dev"

// specVersions are the CNI spec versions whose configs are accepted; a
// result is written in the version of its config.
var specVersions = cniversion.PluginSupports("0.4.0", "1.0.0")

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Printf("gvisor-bridge %s, CNI spec versions %s\n", version, strings.Join(specVersions.SupportedVersions(), ", "))
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck}, specVersions,
		"CNI gvisor-bridge plugin "+version)
}

// cmdAdd reserves the pod's addresses, then wires the pod. The namespace is
// opened first, so an ADD for a namespace that is not there reserves
// nothing; anything that fails later gives back what was made before it.
func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := loadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return ioError("open the pod's network namespace %s: %v", args.Netns, err)
	}
	defer podNS.Close()

	reserved, err := allocate(conf, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = release(conf, args.ContainerID, args.IfName)
		}
	}()
	result, err := wire(conf, args, podNS, reserved)
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// cmdDel removes the pod's veth pair and releases its addresses. It needs
// neither the namespace nor saved state (the host end's name is derived from
// the container and interface), and whatever is already gone counts as
// done, so DEL can be repeated and can come after the namespace is gone.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if err := deleteHostVeth(HostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	return release(conf, args.ContainerID, args.IfName)
}

// cmdCheck tells whether the pod's network is still what ADD made, as its
// prevResult records: the reservation, the bridge with the gateway
// addresses, the host end of the veth, and the pod's interface with its
// MAC, addresses and routes. Enslavement is not checked: gVisor does not
// report a link's master.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return configError("CHECK needs prevResult in the network configuration")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: %v", err), "")
	}
	want, err := expectedPod(args.IfName, args.Netns, prev)
	if err != nil {
		return configError("prevResult: %v", err)
	}
	if err := checkReserved(conf, args.ContainerID, args.IfName); err != nil {
		return err
	}
	if err := checkHost(conf.Bridge, HostVethName(args.ContainerID, args.IfName), want.addrs); err != nil {
		return err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return ioError("open the pod's network namespace %s: %v", args.Netns, err)
	}
	defer podNS.Close()
	return checkPod(podNS, args.IfName, want)
}

// Error codes: the spec's, and 100 (the plugin's own range) for a CHECK
// that found the pod's network changed.
const codeStateDiffers = 100

func ioError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrIOFailure, fmt.Sprintf(format, a...), "")
}

func configError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

func differs(format string, a ...any) *types.Error {
	return types.NewError(codeStateDiffers, fmt.Sprintf(format, a...), "")
}

// asCNIError keeps a CNI error as it is and makes anything else an I/O
// failure (what a netlink or namespace error is), prefixed with what failed.
func asCNIError(what string, err error) error {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return cniErr
	}
	return ioError("%s: %v", what, err)
}
