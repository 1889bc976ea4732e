//! The sidecar injector: the logic behind the mutating admission webhook that adds
//! `vigil-proxy` to enrolled pods. It owns the decision and the patch; it does not own the
//! HTTPS server, the webhook configuration or the namespace cache (the controller's).
//!
//! # Webhook flow
//!
//! ```text
//!   kubectl apply Pod ─► kube-apiserver ─► POST /inject (AdmissionReview: the pod only)
//!                                            │ review():  a CREATE of a Pod? else allowed
//!                                            │ inject():  protected namespace?  → allowed
//!                                            │            vigil.dev/* valid?    → else refused (400)
//!                                            │            enrolled, not yet injected,
//!                                            │            not hostNetwork?      → else allowed
//!                                            ▼
//!          JSON patch (insertions only): vigil-init (iptables), vigil-proxy (native
//!          sidecar, or first container held by postStart `wait-ready`), vigil-token
//!          volume, probe routes, annotations ─► stored Pod
//! ```
//!
//! 1. The controller serves `/inject` and calls [`review()`] with the request body and a
//!    lookup of namespace annotations from its cache (a pod is enrolled by
//!    `vigil.dev/inject: enabled` on itself or its namespace; `disabled` on the pod wins).
//! 2. [`review()`] parses the AdmissionReview; anything but a Pod CREATE is allowed as is.
//! 3. [`inject()`] decides: [`Decision::Skip`] with a [`SkipReason`], an [`InjectError`]
//!    (refused with its message, so a typo never yields a pod silently outside the mesh),
//!    or [`Decision::Inject`] with the patch.
//! 4. The answer echoes the request's UID; a patch is sent as base64 `JSONPatch`.
//!
//! Injection is idempotent: a pod with a `vigil-proxy` container or the
//! `vigil.dev/injected` annotation is skipped, so reinvocation or re-creation of an
//! injected pod changes nothing.
//!
//! # Modules
//!
//! - [`config`]: the settings (the chart's ConfigMap) plus runtime facts the controller
//!   fills in (trust anchors, its identity, native sidecar support).
//! - [`annotations`]: the `vigil.dev/*` annotations and their validation.
//! - [`enroll`]: who is injected, and why a pod is skipped.
//! - [`probes`]: kubelet probes → the proxy's probe routes (`httpGet` probes are declared;
//!   `tcpSocket` probes succeed because the proxy accepts the connection).
//! - [`sidecar`]: the init container, proxy container and token volume.
//! - [`patch`]: those objects as a JSON patch of insertions.
//! - [`inject`](mod@inject): the decision for one pod.
//! - [`review`](mod@review): AdmissionReview in, AdmissionReview out.

pub mod annotations;
pub mod config;
pub mod enroll;
pub mod inject;
pub mod patch;
pub mod probes;
pub mod review;
pub mod sidecar;

pub use annotations::InjectError;
pub use config::{ConfigError, InjectorConfig, NativeSidecar, ProxyPorts, ProxyTls, parse_config};
pub use enroll::SkipReason;
pub use inject::{Decision, inject};
pub use review::{ReviewError, review};
