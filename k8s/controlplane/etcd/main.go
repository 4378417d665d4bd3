// etcd for the local control plane: the etcd server of the release that k8s.io/kubernetes
// itself builds against (go.etcd.io/etcd/server/v3, resolved in go.mod), with etcd's own main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
