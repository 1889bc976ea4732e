//go:build tools

// Package tools pins h2spec, the HTTP/2 conformance tester the proxy tests run
// (proxy/tests/h2spec.rs); build.sh builds it from this module.
package tools

import _ "github.com/summerwind/h2spec/cmd/h2spec"
