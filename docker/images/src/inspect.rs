//! Reading an archive back: what a loader will see (name, config, files), so tests and
//! `vigil-images inspect` check the archive itself rather than the code that wrote it.

use std::{collections::BTreeMap, io::Read, path::Path};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::{
    Error,
    archive::{self, sha256},
};

/// An image archive as loaders see it.
#[derive(Debug)]
pub struct Inspected {
    /// The name containerd imports it as (`io.containerd.image.name`).
    pub reference: String,
    /// Docker's `RepoTags` (from `manifest.json`).
    pub docker_tags: Vec<String>,
    /// The image configuration.
    pub config: ImageConfiguration,
    /// Paths in the layer (no leading `/`).
    pub files: Vec<String>,
}

fn check_blob(path: &Path, digest: &str, size: u64, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() as u64 != size {
        return Err(bad(
            path,
            format!(
                "blob {digest} is {} bytes, its descriptor says {size}",
                bytes.len()
            ),
        ));
    }
    if sha256(bytes) != digest {
        return Err(bad(
            path,
            format!("blob {digest} does not match its digest"),
        ));
    }
    Ok(())
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadArchive {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads `path`.
pub fn inspect(path: &Path) -> Result<Inspected, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut a = tar::Archive::new(file);
    for e in a.entries().map_err(|e| Error::io(path, e))? {
        let mut e = e.map_err(|e| Error::io(path, e))?;
        let name = e
            .path()
            .map_err(|e| Error::io(path, e))?
            .display()
            .to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        entries.insert(name, bytes);
    }
    let get = |name: &str| {
        entries
            .get(name)
            .ok_or_else(|| bad(path, format!("no {name}")))
    };
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        get(&format!("blobs/sha256/{hex}"))
    };
    if !get("oci-layout")?.starts_with(b"{") {
        return Err(bad(path, "oci-layout is not JSON"));
    }
    let index: ImageIndex = serde_json::from_slice(get("index.json")?)
        .map_err(|e| bad(path, format!("index.json: {e}")))?;
    let desc = index
        .manifests()
        .first()
        .ok_or_else(|| bad(path, "index.json lists no manifest"))?;
    let reference = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(archive::CONTAINERD_NAME))
        .cloned()
        .ok_or_else(|| bad(path, "the manifest has no image name annotation"))?;
    let manifest: ImageManifest = serde_json::from_slice(blob(desc.digest().as_ref())?)
        .map_err(|e| bad(path, format!("manifest: {e}")))?;
    let config: ImageConfiguration =
        serde_json::from_slice(blob(manifest.config().digest().as_ref())?)
            .map_err(|e| bad(path, format!("config: {e}")))?;
    // Every blob is what its descriptor says (digest, size), and the layers are the
    // uncompressed tars the config's diff IDs name: what containerd checks on import.
    for (d, b) in std::iter::once((desc, blob(desc.digest().as_ref())?)).chain(std::iter::once((
        manifest.config(),
        blob(manifest.config().digest().as_ref())?,
    ))) {
        check_blob(path, d.digest().as_ref(), d.size(), b)?;
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(path, "the config's diff IDs do not match the layers"));
    }
    let mut files = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let bytes = blob(layer.digest().as_ref())?;
        check_blob(path, layer.digest().as_ref(), layer.size(), bytes)?;
        if &sha256(bytes) != diff_id {
            return Err(bad(
                path,
                format!("layer {} does not match diff ID {diff_id}", layer.digest()),
            ));
        }
        let mut t = tar::Archive::new(bytes.as_slice());
        for e in t.entries().map_err(|e| Error::io(path, e))? {
            let e = e.map_err(|e| Error::io(path, e))?;
            files.push(
                e.path()
                    .map_err(|e| Error::io(path, e))?
                    .display()
                    .to_string(),
            );
        }
    }
    let docker: serde_json::Value = serde_json::from_slice(get("manifest.json")?)
        .map_err(|e| bad(path, format!("manifest.json: {e}")))?;
    let docker_tags = docker
        .get(0)
        .and_then(|m| m.get("RepoTags"))
        .and_then(|t| t.as_array())
        .map(|t| {
            t.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let docker_config = docker
        .get(0)
        .and_then(|m| m.get("Config"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad(path, "manifest.json has no Config"))?;
    get(docker_config)?;
    Ok(Inspected {
        reference,
        docker_tags,
        config,
        files,
    })
}
