// gvisor-service-proxy serves Kubernetes Services on a node without
// netfilter (a gVisor sandbox), where kube-proxy cannot run: it owns each
// ClusterIP as an address on the pod bridge and splices TCP connections and
// UDP datagrams sent to it to the Service's ready endpoints, and serves
// NodePorts on the node's addresses. It watches Services and EndpointSlices
// through client-go informers, as kube-proxy does, with kube-proxy's
// identity and RBAC (user system:kube-proxy, role system:node-proxier).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// version is set at build time.
var version = "unknown"

const (
	// minSyncInterval coalesces bursts of events (a Deployment scaled by 20)
	// into few syncs, and keeps each change's delay well under a second.
	minSyncInterval = 100 * time.Millisecond
	// retryInterval is how soon a sync that failed (an address, a bind) is tried again.
	retryInterval = 2 * time.Second
	// Labels kube-proxy honours: a Service another proxy serves, and the
	// slices of headless Services.
	serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	headlessLabel         = "service.kubernetes.io/headless"
)

type options struct {
	kubeconfig  string
	bridge      string
	serviceCIDR netip.Prefix
	nodeIPs     []netip.Addr
}

func parseOptions(args []string) (options, error) {
	var opts options
	var serviceCIDR, nodeIPs string
	flags := flag.NewFlagSet("gvisor-service-proxy", flag.ContinueOnError)
	flags.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig of the proxy's identity (system:kube-proxy)")
	flags.StringVar(&opts.bridge, "bridge", "gvbr0", "the pod bridge that gets the service addresses")
	flags.StringVar(&serviceCIDR, "service-cidr", "10.43.0.0/16", "the cluster's service range")
	flags.StringVar(&nodeIPs, "node-ip", "", "comma-separated node addresses NodePorts are served on")
	showVersion := flags.Bool("version", false, "print the version and exit")
	if err := flags.Parse(args); err != nil {
		return opts, err
	}
	if *showVersion {
		fmt.Println("gvisor-service-proxy", version)
		os.Exit(0)
	}
	if opts.kubeconfig == "" {
		return opts, fmt.Errorf("--kubeconfig is required")
	}
	prefix, err := netip.ParsePrefix(serviceCIDR)
	if err != nil || !prefix.Addr().Is4() {
		return opts, fmt.Errorf("--service-cidr %q: an IPv4 range like 10.43.0.0/16 is needed", serviceCIDR)
	}
	opts.serviceCIDR = prefix.Masked()
	for _, field := range strings.Split(nodeIPs, ",") {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		ip, err := netip.ParseAddr(field)
		if err != nil || !ip.Is4() {
			return opts, fmt.Errorf("--node-ip %q: not an IPv4 address", field)
		}
		opts.nodeIPs = append(opts.nodeIPs, ip)
	}
	return opts, nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	opts, err := parseOptions(os.Args[1:])
	if err != nil {
		log.Fatalf("gvisor-service-proxy: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, opts); err != nil {
		log.Fatalf("gvisor-service-proxy: %v", err)
	}
}

func run(ctx context.Context, opts options) error {
	config, err := clientcmd.BuildConfigFromFlags("", opts.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", opts.kubeconfig, err)
	}
	config.UserAgent = "gvisor-service-proxy/" + version
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	services := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "!" + serviceProxyNameLabel }))
	slices := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discovery.LabelServiceName + ",!" + headlessLabel
		}))
	serviceLister := services.Core().V1().Services().Lister()
	sliceLister := slices.Discovery().V1().EndpointSlices().Lister()

	changed := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(changed) },
		UpdateFunc: func(any, any) { poke(changed) },
		DeleteFunc: func(any) { poke(changed) },
	}
	for _, informer := range []cache.SharedIndexInformer{
		services.Core().V1().Services().Informer(), slices.Discovery().V1().EndpointSlices().Informer(),
	} {
		if _, err := informer.AddEventHandler(notify); err != nil {
			return err
		}
	}
	for _, factory := range []informers.SharedInformerFactory{services, slices} {
		factory.Start(ctx.Done())
		defer factory.Shutdown()
	}
	for _, factory := range []informers.SharedInformerFactory{services, slices} {
		for kind, synced := range factory.WaitForCacheSync(ctx.Done()) {
			if !synced {
				return fmt.Errorf("the %v cache never synced", kind)
			}
		}
	}
	log.Printf("gvisor-service-proxy %s: serving %s on %s, NodePorts on %v", version, opts.serviceCIDR, opts.bridge, opts.nodeIPs)

	p := newProxier(bridgeAddresses{bridge: opts.bridge, serviceCIDR: opts.serviceCIDR}, opts.nodeIPs)
	defer p.closeAll()
	syncOnce := func() error {
		svcs, err := serviceLister.List(labels.Everything())
		if err != nil {
			return err
		}
		eps, err := sliceLister.List(labels.Everything())
		if err != nil {
			return err
		}
		return p.sync(svcs, eps)
	}
	return syncLoop(ctx, changed, syncOnce)
}

// poke asks for a sync without blocking; one pending request is enough.
func poke(changed chan struct{}) {
	select {
	case changed <- struct{}{}:
	default:
	}
}

// syncLoop syncs at once, then after every change (at most every
// minSyncInterval), and again after retryInterval while a sync fails.
func syncLoop(ctx context.Context, changed <-chan struct{}, syncOnce func() error) error {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry.C:
		}
		if err := syncOnce(); err != nil {
			log.Printf("sync: %v (retrying in %s)", err, retryInterval)
			retry.Reset(retryInterval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(minSyncInterval):
		}
	}
}
