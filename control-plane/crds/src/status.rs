//! The status the controller writes on policy resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of a Segment, AccessPolicy or Quarantine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `Accepted` (True, or False with the reason it was rejected), and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many workloads the resource currently applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workloads: Option<u32>,
    /// How many of their proxies have acknowledged the policy generation that includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcing_proxies: Option<u32>,
}
