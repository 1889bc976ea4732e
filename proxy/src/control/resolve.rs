//! `Policy.Resolve`: which mesh workload serves an address (for outbound discovery).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use vigil_api::{
    convert::destination_from_wire,
    pb::{self, policy_client::PolicyClient},
};

use super::Control;
use crate::outbound::Target;

/// Longest wait for an answer (the application's connection waits meanwhile).
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the controller what serves `address`. The answer is validated exactly like a
/// pushed table entry; `None` means no mesh workload.
pub async fn resolve(ctl: &Control, address: SocketAddr) -> anyhow::Result<Option<Target>> {
    let result = tokio::time::timeout(TIMEOUT, ask(ctl, address))
        .await
        .context("the controller did not answer in time")
        .and_then(|r| r);
    if result.is_err() {
        // The next call builds a fresh channel.
        *ctl.unary.lock().await = None;
    }
    result
}

async fn ask(ctl: &Control, address: SocketAddr) -> anyhow::Result<Option<Target>> {
    let channel = unary_channel(ctl).await?;
    let resp = PolicyClient::new(channel)
        .resolve(pb::ResolveRequest {
            workload: ctl.workload.clone(),
            address: address.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("controller refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    let Some(d) = resp.destination else {
        return Ok(None);
    };
    let d = destination_from_wire(d, "destination")?;
    let compiled = vigil_policy::Destination::compile(&d, "destination")
        .map_err(|e| anyhow::anyhow!("the controller's answer is invalid: {e}"))?;
    Ok(Some(Target::from(&compiled)))
}

/// The cached channel, rebuilt when this workload's certificate changed.
async fn unary_channel(ctl: &Control) -> anyhow::Result<tonic::transport::Channel> {
    let serial = ctl
        .creds
        .current()
        .map(|c| c.info.serial.clone())
        .context("no certificate yet")?;
    let mut slot = ctl.unary.lock().await;
    if let Some((ch, s)) = slot.as_ref()
        && *s == serial
    {
        return Ok(ch.clone());
    }
    let ch = ctl.channel(true).await?;
    *slot = Some((ch.clone(), serial));
    Ok(ch)
}
