// CoreDNS of the kubeup bundle (built by `cargo xtask bundle`): upstream's
// coremain with only the plugins a cluster DNS needs, in upstream's order
// (plugin.cfg). Upstream's main links every plugin, some of which need
// cloud SDK modules kubeup has no use for.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The plugins above in the order upstream's plugin.cfg chains them.
var directives = []string{
	"reload",
	"health",
	"ready",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"loop",
	"kubernetes",
	"forward",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
