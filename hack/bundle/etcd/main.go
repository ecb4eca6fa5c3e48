// etcd for the kubeup bundle: the upstream server's entry point, built from
// its Go module because release downloads are not reachable everywhere.
// etcdctl is built from this module too (see the `tool` line in go.mod).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
