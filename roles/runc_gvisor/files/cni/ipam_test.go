package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// ipamConf is a config whose reservations go to a fresh directory.
func ipamConf(t *testing.T, ranges, envArgs string) (*NetConf, string) {
	t.Helper()
	dir := t.TempDir()
	conf, err := loadConf([]byte(`{"cniVersion":"1.0.0","name":"pods","ipam":{"type":"host-local","dataDir":"`+dir+`","ranges":`+ranges+`}}`), envArgs)
	if err != nil {
		t.Fatal(err)
	}
	return conf, filepath.Join(dir, "pods")
}

// reservations are the addresses host-local's store holds: one file each.
func reservations(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if name := e.Name(); name != "lock" && !strings.HasPrefix(name, "last_reserved_ip") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func TestAllocateReservesWhereHostLocalDoesAndReleaseIsRepeatable(t *testing.T) {
	conf, dir := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}]]`, "")
	first, err := allocate(conf, "c1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	second, err := allocate(conf, "c2", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.IPs[0], second.IPs[0]
	if a.Address.String() != "10.42.0.2/24" || b.Address.String() != "10.42.0.3/24" || a.Gateway.String() != "10.42.0.1" {
		t.Fatalf("addresses %s, %s via %s", &a.Address, &b.Address, a.Gateway)
	}
	if got := reservations(t, dir); fmt.Sprint(got) != "[10.42.0.2 10.42.0.3]" {
		t.Fatalf("reservations %v", got)
	}
	content, _ := os.ReadFile(filepath.Join(dir, "10.42.0.2"))
	if string(content) != "c1\r\neth0" {
		t.Fatalf("reservation holds %q, not host-local's format", content)
	}
	if _, err := allocate(conf, "c1", "eth0"); err == nil {
		t.Error("a second ADD of the same container and interface got another address")
	}
	if got := reservations(t, dir); fmt.Sprint(got) != "[10.42.0.2 10.42.0.3]" {
		t.Fatalf("the refused second ADD changed the reservations: %v", got)
	}
	for i := 0; i < 2; i++ {
		if err := release(conf, "c1", "eth0"); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	if got := reservations(t, dir); fmt.Sprint(got) != "[10.42.0.3]" {
		t.Fatalf("reservations after release %v", got)
	}
}

func TestCheckReservedFindsTheContainersAddress(t *testing.T) {
	conf, _ := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}]]`, "")
	if _, err := allocate(conf, "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := checkReserved(conf, "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	var cniErr *types.Error
	if err := checkReserved(conf, "c2", "eth0"); !errors.As(err, &cniErr) || cniErr.Code != codeStateDiffers {
		t.Fatalf("unreserved container: %v", err)
	}
}

func TestConcurrentAllocationsGetDistinctAddresses(t *testing.T) {
	conf, dir := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}]]`, "")
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = allocate(conf, fmt.Sprintf("c%d", i), "eth0")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := reservations(t, dir); len(got) != 20 {
		t.Fatalf("%d reservations for 20 containers: %v", len(got), got)
	}
}

func TestRequestedAddressFromCNIArgs(t *testing.T) {
	conf, dir := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}]]`, "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.42.0.9")
	result, err := allocate(conf, "c1", "eth0")
	if err != nil || result.IPs[0].Address.IP.String() != "10.42.0.9" {
		t.Fatalf("%v, %v", result, err)
	}
	outside, _ := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}]]`, "IP=10.99.0.9")
	if _, err := allocate(outside, "c1", "eth0"); err == nil || !strings.Contains(err.Error(), "10.99.0.9") {
		t.Fatalf("an address outside the ranges: %v", err)
	}
	if got := reservations(t, dir); fmt.Sprint(got) != "[10.42.0.9]" {
		t.Fatalf("reservations %v", got)
	}
}

func TestAFullRangeGivesBackTheOthers(t *testing.T) {
	// The second range has one address, .2 (.1 is its gateway).
	conf, dir := ipamConf(t, `[[{"subnet":"10.42.0.0/24"}],[{"subnet":"10.43.0.0/30"}]]`, "")
	if _, err := allocate(conf, "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	_, err := allocate(conf, "c2", "eth0")
	if err == nil || !strings.Contains(err.Error(), "failed to allocate for range 1") {
		t.Fatalf("error %v", err)
	}
	if got := reservations(t, dir); fmt.Sprint(got) != "[10.42.0.2 10.43.0.2]" {
		t.Fatalf("c2's first address was kept: %v", got)
	}
}

func TestParseResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	text := "# comment\nnameserver 10.0.0.10\nsearch a.example b.example\ndomain example\noptions ndots:5\n; other\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	dns, err := parseResolvConf(path)
	if err != nil || fmt.Sprintf("%v %v %v %v", dns.Nameservers, dns.Search, dns.Domain, dns.Options) != "[10.0.0.10] [a.example b.example] example [ndots:5]" {
		t.Fatalf("%+v, %v", dns, err)
	}
}
