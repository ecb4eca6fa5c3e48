// hyperkube: every Kubernetes component kubeup runs, linked once.
//
// Six separate binaries would link the same ~100 MiB of dependencies six
// times (minutes each on a small machine); one multi-call binary links once.
// The component is chosen by the name it is invoked as (bin/kubelet is a
// symlink to hyperkube) or, when invoked as hyperkube, by the first argument.
//
// Built with the `nodeonly` tag the same program is `kubenode`: the kubelet
// and kube-proxy alone, about half the size, which is what every worker
// join uploads (controlplane.go adds the rest).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric

	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// Each entry mirrors the body of the upstream cmd/<name>/main.go.
var components = map[string]func() int{
	"kubelet": func() int {
		return cli.Run(kubelet.NewKubeletCommand(context.Background()))
	},
	"kube-proxy": func() int { return cli.Run(proxy.NewProxyCommand()) },
}

func main() {
	prog := filepath.Base(os.Args[0])
	name := prog
	if _, ok := components[name]; !ok && len(os.Args) > 1 {
		// `hyperkube kubelet --flags…`: shift so the component sees its own
		// name as argv[0], exactly as through a symlink.
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := components[name]
	if !ok {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: %s COMPONENT [flags]\ncomponents: %v\n", prog, names)
		os.Exit(2)
	}
	os.Exit(run())
}
