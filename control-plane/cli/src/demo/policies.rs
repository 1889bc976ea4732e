//! The demo's policy documents: the same YAML a user writes (and `kubectl apply`s in
//! Kubernetes). The starting set is written before the controller starts; the steps add
//! and remove the others while it runs.

/// Segments: one per business service. `intruder` is enrolled (it has an identity) but
/// belongs to no segment, so nothing allows it anything.
pub(crate) const SEGMENTS: &str = "\
# One segment per service; membership is by label.
apiVersion: policy.vigil.dev/v1alpha1
kind: Segment
metadata: {name: frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: frontend}}
---
apiVersion: policy.vigil.dev/v1alpha1
kind: Segment
metadata: {name: orders, namespace: shop}
spec:
  podSelector: {matchLabels: {app: orders}}
---
apiVersion: policy.vigil.dev/v1alpha1
kind: Segment
metadata: {name: payments, namespace: shop}
spec:
  podSelector: {matchLabels: {app: payments}}
";

/// The starting access policies. Everything else is denied (zero trust).
pub(crate) const POLICIES: &str = "\
# frontend may read orders.
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: frontend-reads-orders, namespace: shop}
spec:
  target: {segment: orders}
  action: Allow
  from: [{segment: frontend}]
  rules:
    - methods: [GET]
      paths: [{prefix: /orders}]
---
# orders may charge payments: JSON POSTs to /charge only, rate limited per caller.
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders-charges-payments, namespace: shop}
spec:
  target: {segment: payments}
  action: Allow
  from: [{segment: orders}]
  rules:
    - methods: [POST]
      paths: [{exact: /charge}]
      headers: [{name: content-type, exact: application/json}]
  rateLimit: {requestsPerSecond: 500, burst: 1000}
---
# Nobody reaches /admin on a backend, whatever else allows it (deny wins).
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  target: {podSelector: {matchLabels: {tier: backend}}}
  action: Deny
  from: [{authenticated: true}, {unauthenticated: true}]
  rules:
    - paths: [{prefix: /admin}]
";

/// Step 4's edit: frontend may also read balances.
pub(crate) const BALANCE: &str = "\
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: frontend-reads-balance, namespace: shop}
spec:
  target: {segment: payments}
  action: Allow
  from: [{segment: frontend}]
  rules:
    - methods: [GET]
      paths: [{exact: /balance}]
";

/// Step 5: a planned lockdown of orders, tried in audit mode first.
pub(crate) const AUDIT: &str = "\
# Dry run: would freezing orders break the frontend? Audit mode reports, never blocks.
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders-freeze, namespace: shop}
spec:
  target: {segment: orders}
  action: Deny
  mode: Audit
  from: [{segment: frontend}]
  rules:
    - methods: [GET]
      paths: [{prefix: /orders}]
";

/// Step 6: just-in-time access for an on-call task, valid until `until` (RFC 3339).
pub(crate) fn jit(until: &str) -> String {
    format!(
        "\
# On-call may look at refunds until {until}; the grant expires by itself.
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: oncall-refunds, namespace: shop}}
spec:
  target: {{segment: payments}}
  action: Allow
  from: [{{segment: frontend}}]
  rules:
    - methods: [GET]
      paths: [{{exact: /refunds}}]
  validUntil: '{until}'
"
    )
}
