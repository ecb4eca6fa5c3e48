//go:build !nodeonly

package main

import (
	"os"
	_ "time/tzdata" // for CronJob time zone support, as in the upstream mains

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// The control plane and kubectl: in hyperkube, not in kubenode.
func init() {
	components["kube-apiserver"] = func() int { return cli.Run(apiserver.NewAPIServerCommand()) }
	components["kube-controller-manager"] = func() int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	}
	components["kube-scheduler"] = func() int { return cli.Run(scheduler.NewSchedulerCommand()) }
	components["kubectl"] = func() int {
		// kubectl sets its verbosity before building the command tree.
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	}
}
