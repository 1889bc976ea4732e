//! The CA state in a Secret: the controller works on a private state directory (an
//! in-memory emptyDir, files 0600) mirrored from and to one Secret.
//!
//! - Start: the Secret exists → its keys become the directory's files. It does not →
//!   the controller creates a CA and then the Secret with `create` (never `update`), so
//!   a Secret that appeared meanwhile (another replica won the race, or an operator
//!   supplied a CA) is never overwritten: the loser discards its fresh CA and loads the
//!   Secret's.
//! - After CA maintenance rotated something, the leader writes the new files with an
//!   optimistic-concurrency update (resourceVersion).
//! - Followers pick up the leader's rotations by reloading when the Secret changes.
//!
//! Keys are the state files' names (`ca.json`, `root-*`, `issuer-*`, `token-*`); the lock
//! file is never stored.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use super::Kube;

const LOCK_FILE: &str = "ca.lock";

/// What [`save_new`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    /// The Secret now holds this controller's CA.
    Created,
    /// A Secret appeared first; its CA has been restored into the directory instead.
    LostRace,
}

fn api(k: &Kube) -> Api<Secret> {
    Api::namespaced(k.client.clone(), &k.args.namespace)
}

/// The directory's state files.
pub fn read_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == LOCK_FILE || !e.file_type()?.is_file() {
            continue;
        }
        out.insert(name, std::fs::read(e.path())?);
    }
    Ok(out)
}

/// Replaces the directory's state files with `files` (mode 0600).
fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in read_dir(dir)?.keys() {
        if !files.contains_key(name) {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    // A Secret made with `kubectl create secret generic --from-file=<state dir>` carries
    // the (empty) lock file too: it is not state, so it is skipped.
    for (name, bytes) in files.iter().filter(|(n, _)| n.as_str() != LOCK_FILE) {
        anyhow::ensure!(
            !name.contains('/') && !name.starts_with('.'),
            "unexpected key {name:?} in the CA Secret"
        );
        vigil_cert_authority::state::write_private_file(&dir.join(name), bytes)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

fn data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .as_ref()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

/// Loads the Secret into `dir`; `false` if there is no Secret yet.
pub async fn restore(k: &Kube, dir: &Path) -> anyhow::Result<bool> {
    let name = &k.args.ca_secret;
    let Some(secret) = api(k)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {}/{name}", k.args.namespace))?
    else {
        return Ok(false);
    };
    let files = data(&secret);
    anyhow::ensure!(
        files.contains_key(vigil_cert_authority::state::MANIFEST),
        "Secret {}/{name} exists but holds no CA state ({} missing); refusing to start rather than replace it",
        k.args.namespace,
        vigil_cert_authority::state::MANIFEST
    );
    write_dir(dir, &files)?;
    tracing::info!(secret = %name, files = files.len(), "CA state restored from the Secret");
    Ok(true)
}

/// Creates the Secret from `dir` (first start). Never overwrites.
pub async fn save_new(k: &Kube, dir: &Path) -> anyhow::Result<Saved> {
    let name = &k.args.ca_secret;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(k.args.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "vigil".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "vigil.dev/note".to_string(),
                "The mesh CA (root and issuer keys). Deleting it makes every workload certificate untrusted at the next restart.".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(false),
        data: Some(
            read_dir(dir)?
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    };
    match api(k).create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::warn!(secret = %name, "new CA stored in the Secret (first start)");
            Ok(Saved::Created)
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            tracing::warn!(secret = %name, "another replica stored a CA first; using that one");
            anyhow::ensure!(restore(k, dir).await?, "Secret {name} vanished");
            Ok(Saved::LostRace)
        }
        Err(e) => Err(e).with_context(|| format!("creating Secret {}/{name}", k.args.namespace)),
    }
}

/// Writes the directory's files to the existing Secret if they differ (leader, after
/// maintenance). Returns whether it wrote.
pub async fn sync(k: &Kube, dir: &Path) -> anyhow::Result<bool> {
    let name = &k.args.ca_secret;
    let mut secret = api(k).get(name).await?;
    let files = read_dir(dir)?;
    if data(&secret) == files {
        return Ok(false);
    }
    secret.data = Some(files.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    // resourceVersion is kept: a concurrent change makes this fail instead of clobbering.
    api(k)
        .replace(name, &PostParams::default(), &secret)
        .await?;
    tracing::info!(secret = %name, "CA state written to the Secret after rotation");
    Ok(true)
}

/// Reloads `dir` from the Secret if it differs (followers). Returns whether it changed.
pub async fn refresh(k: &Kube, dir: &Path) -> anyhow::Result<bool> {
    let secret = api(k).get(&k.args.ca_secret).await?;
    let files = data(&secret);
    if files == read_dir(dir)? || !files.contains_key(vigil_cert_authority::state::MANIFEST) {
        return Ok(false);
    }
    write_dir(dir, &files)?;
    Ok(true)
}

/// After the CA was opened or created in `dir`: stores it if there is no Secret yet.
/// Returns `true` if `dir` was replaced by a Secret's CA (another replica won the race,
/// or an operator supplied one meanwhile) and must be re-opened.
pub async fn save_if_new(k: &Kube, dir: &Path) -> anyhow::Result<bool> {
    match api(k).get_opt(&k.args.ca_secret).await? {
        Some(secret) if data(&secret) == read_dir(dir)? => Ok(false),
        Some(_) => {
            anyhow::ensure!(
                restore(k, dir).await?,
                "Secret {} vanished",
                k.args.ca_secret
            );
            Ok(true)
        }
        None => Ok(save_new(k, dir).await? == Saved::LostRace),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_is_never_state_and_odd_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = BTreeMap::from([
            ("ca.json".to_string(), b"{}".to_vec()),
            ("ca.lock".to_string(), Vec::new()),
        ]);
        write_dir(dir.path(), &files).unwrap();
        assert_eq!(
            read_dir(dir.path()).unwrap().keys().collect::<Vec<_>>(),
            ["ca.json"]
        );
        assert!(!dir.path().join("ca.lock").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        for bad in ["../escape", ".hidden"] {
            let files = BTreeMap::from([(bad.to_string(), b"x".to_vec())]);
            let err = write_dir(dir.path(), &files).unwrap_err().to_string();
            assert!(err.contains("unexpected key"), "{bad}: {err}");
        }
    }
}
