//go:build tools

// Package tools pins the Kubernetes commands this wrapper module builds (../build.sh):
// the control plane for the API-server tests, and a node (kubelet, kube-proxy) plus the
// controller-manager and scheduler for the real-node tests.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
