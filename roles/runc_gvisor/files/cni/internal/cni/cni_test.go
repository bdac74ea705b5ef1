package cni

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodConf = `{"cniVersion":"1.0.0","name":"pods","type":"gvisor-bridge",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.42.0.0/24"}]]}}`

func TestParseNetConfDefaultsTheBridge(t *testing.T) {
	conf, err := ParseNetConf([]byte(goodConf))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != DefaultBridge || conf.IPAM.Type != "host-local" || conf.MTU != 0 {
		t.Fatalf("conf = %+v", conf)
	}
}

func TestParseNetConfRefusesNamingWhat(t *testing.T) {
	cases := map[string]struct {
		conf  string
		code  int
		words string
	}{
		"not json":     {`{`, CodeDecodeFailure, "not JSON"},
		"old version":  {`{"cniVersion":"0.3.1","ipam":{"type":"host-local"}}`, CodeIncompatibleVersion, `cniVersion "0.3.1"`},
		"no version":   {`{"ipam":{"type":"host-local"}}`, CodeIncompatibleVersion, `cniVersion ""`},
		"no ipam":      {`{"cniVersion":"1.0.0","name":"n"}`, CodeInvalidConfig, "ipam.type is missing"},
		"ipam path":    {`{"cniVersion":"1.0.0","ipam":{"type":"../bin/sh"}}`, CodeInvalidConfig, "is not a plugin name"},
		"long bridge":  {`{"cniVersion":"1.0.0","bridge":"sixteen-letters!","ipam":{"type":"host-local"}}`, CodeInvalidConfig, "longer than 15"},
		"slash bridge": {`{"cniVersion":"1.0.0","bridge":"a/b","ipam":{"type":"host-local"}}`, CodeInvalidConfig, "'/'"},
		"mtu":          {`{"cniVersion":"1.0.0","mtu":70000,"ipam":{"type":"host-local"}}`, CodeInvalidConfig, "mtu 70000"},
	}
	for name, c := range cases {
		_, err := ParseNetConf([]byte(c.conf))
		var cniErr *Error
		if !errors.As(err, &cniErr) || cniErr.Code != c.code || !strings.Contains(cniErr.Msg, c.words) {
			t.Errorf("%s: error %v, want code %d mentioning %q", name, err, c.code, c.words)
		}
	}
}

func TestReadEnv(t *testing.T) {
	full := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc-1.x_2", "CNI_NETNS": "/run/netns/p",
		"CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
	with := func(key, value string) func(string) string {
		return func(k string) string {
			if k == key {
				return value
			}
			return full[k]
		}
	}
	if env, err := ReadEnv(with("", "")); err != nil || env.ContainerID != "abc-1.x_2" {
		t.Fatalf("valid env refused: %v", err)
	}
	if _, err := ReadEnv(with("CNI_COMMAND", "VERSION")); err != nil {
		t.Errorf("VERSION needs nothing else: %v", err)
	}
	if _, err := ReadEnv(with("CNI_NETNS", "")); err == nil {
		t.Error("ADD without CNI_NETNS accepted")
	}
	deleting := func(k string) string { return with("CNI_COMMAND", "DEL")(k) }
	if _, err := ReadEnv(func(k string) string {
		if k == "CNI_NETNS" {
			return ""
		}
		return deleting(k)
	}); err != nil {
		t.Errorf("DEL without CNI_NETNS refused: %v", err)
	}
	bad := map[string]string{"CNI_COMMAND": "GC", "CNI_CONTAINERID": "-leading", "CNI_IFNAME": "eth0:1", "CNI_PATH": ""}
	for key, value := range bad {
		_, err := ReadEnv(with(key, value))
		var cniErr *Error
		if !errors.As(err, &cniErr) || cniErr.Code != CodeInvalidEnvironment || !strings.Contains(cniErr.Msg, key) {
			t.Errorf("%s=%q: error %v, want code 4 naming %s", key, value, err, key)
		}
	}
}

func TestEncodeWritesTheConfigsVersion(t *testing.T) {
	index := 2
	result := &Result{IPs: []IPConfig{{Interface: &index, Address: "10.42.0.5/24", Gateway: "10.42.0.1"},
		{Interface: &index, Address: "fd00::5/64", Gateway: "fd00::1"}}}
	old, _ := result.Encode("0.4.0")
	var decoded Result
	if err := json.Unmarshal(old, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.CNIVersion != "0.4.0" || decoded.IPs[0].Version != "4" || decoded.IPs[1].Version != "6" || *decoded.IPs[0].Interface != 2 {
		t.Fatalf("0.4.0 result = %s", old)
	}
	current, _ := result.Encode("1.0.0")
	if strings.Contains(string(current), `"version"`) || !strings.Contains(string(current), `"cniVersion":"1.0.0"`) {
		t.Fatalf("1.0.0 result = %s", current)
	}
}

func TestAddressesNeedAGatewayInTheirSubnet(t *testing.T) {
	ok := &Result{IPs: []IPConfig{{Address: "10.42.0.5/24", Gateway: "10.42.0.1"}}}
	addrs, err := ok.Addresses()
	if err != nil || addrs[0].IPNet.String() != "10.42.0.5/24" || addrs[0].Gateway.String() != "10.42.0.1" {
		t.Fatalf("addresses = %+v, %v", addrs, err)
	}
	for _, ip := range []IPConfig{{Address: "10.42.0.5/24"}, {Address: "10.42.0.5/24", Gateway: "10.43.0.1"}, {Address: "nonsense"}} {
		if _, err := (&Result{IPs: []IPConfig{ip}}).Addresses(); err == nil {
			t.Errorf("%+v accepted", ip)
		}
	}
	if _, err := (&Result{}).Addresses(); err == nil {
		t.Error("a result without addresses accepted")
	}
}

// fakePlugin writes an executable script into a fresh CNI_PATH directory.
func fakePlugin(t *testing.T, name, script string) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDelegatePassesCommandAndConfig(t *testing.T) {
	dir := fakePlugin(t, "ipam", `printf '{"cmd":"%s","stdin":%s}' "$CNI_COMMAND" "$(cat)"`)
	out, err := Delegate(Env{Path: "/nonexistent:" + dir}, "ipam", "DEL", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"cmd":"DEL","stdin":{"x":1}}` {
		t.Fatalf("plugin saw %s", out)
	}
}

func TestDelegateKeepsThePluginsError(t *testing.T) {
	dir := fakePlugin(t, "ipam", `echo '{"code":11,"msg":"range is full"}'; exit 1`)
	_, err := Delegate(Env{Path: dir}, "ipam", "ADD", nil)
	var cniErr *Error
	if !errors.As(err, &cniErr) || cniErr.Code != 11 || cniErr.Msg != "IPAM plugin ipam ADD: range is full" {
		t.Fatalf("error = %#v", err)
	}
	dir = fakePlugin(t, "ipam", `echo crashed; exit 2`)
	_, err = Delegate(Env{Path: dir}, "ipam", "ADD", nil)
	if !errors.As(err, &cniErr) || cniErr.Code != CodeIOFailure || !strings.Contains(cniErr.Msg, "crashed") {
		t.Fatalf("error = %#v", err)
	}
}

func TestDelegateNamesAMissingPlugin(t *testing.T) {
	_, err := Delegate(Env{Path: t.TempDir()}, "host-local", "ADD", nil)
	if err == nil || !strings.Contains(err.Error(), `IPAM plugin "host-local" is not in CNI_PATH`) {
		t.Fatalf("error = %v", err)
	}
}
