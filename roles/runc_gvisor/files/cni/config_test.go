package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

const goodConf = `{"cniVersion":"1.0.0","name":"pods","type":"gvisor-bridge",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.42.0.0/24"}]]}}`

func TestLoadConfDefaultsTheBridgeAndReadsHostLocalsSection(t *testing.T) {
	conf, err := loadConf([]byte(goodConf), "")
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != DefaultBridge || conf.MTU != 0 || conf.ipam.Name != "pods" || conf.ipam.DataDir != "" {
		t.Fatalf("conf = %+v, ipam %+v", conf, conf.ipam)
	}
	// host-local's defaults: the gateway is the subnet's first address.
	if gw := conf.ipam.Ranges[0][0].Gateway.String(); gw != "10.42.0.1" {
		t.Fatalf("gateway %s", gw)
	}
}

func TestLoadConfRefusesNamingWhat(t *testing.T) {
	ipam := `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.42.0.0/24"}]]}`
	cases := map[string]struct {
		conf  string
		code  uint
		words string
	}{
		"not json":     {`{`, types.ErrDecodingFailure, "not JSON"},
		"no ipam":      {`{"cniVersion":"1.0.0","name":"n"}`, types.ErrInvalidNetworkConfig, "ipam.type is missing"},
		"other ipam":   {`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"static"}}`, types.ErrInvalidNetworkConfig, `ipam.type "static" is not supported`},
		"no ranges":    {`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "ipam: no IP ranges specified"},
		"bad range":    {`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.42.0.0/24","gateway":"10.43.0.1"}]]}}`, types.ErrInvalidNetworkConfig, "not in network"},
		"bad route":    {`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","routes":[{"dst":"nonsense"}],"ranges":[[{"subnet":"10.42.0.0/24"}]]}}`, types.ErrInvalidNetworkConfig, "ipam"},
		"long bridge":  {`{"cniVersion":"1.0.0","bridge":"sixteen-letters!",` + ipam + `}`, types.ErrInvalidNetworkConfig, "interface name is too long"},
		"slash bridge": {`{"cniVersion":"1.0.0","bridge":"a/b",` + ipam + `}`, types.ErrInvalidNetworkConfig, "contains / or :"},
		"mtu":          {`{"cniVersion":"1.0.0","mtu":70000,` + ipam + `}`, types.ErrInvalidNetworkConfig, "mtu 70000"},
		"prevResult":   {`{"cniVersion":"1.0.0","prevResult":{"ips":"x"},` + ipam + `}`, types.ErrDecodingFailure, "prevResult"},
	}
	for name, c := range cases {
		_, err := loadConf([]byte(c.conf), "")
		var cniErr *types.Error
		if !errors.As(err, &cniErr) || cniErr.Code != c.code || !strings.Contains(cniErr.Error(), c.words) {
			t.Errorf("%s: error %v, want code %d mentioning %q", name, err, c.code, c.words)
		}
	}
}
