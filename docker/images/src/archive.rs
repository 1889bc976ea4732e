//! One image as an archive that every common loader takes: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) plus Docker's `manifest.json` pointing
//! at the same blobs — the shape `docker save` writes since Docker 25. `ctr images
//! import`, `k3s ctr images import`, `kind load image-archive` (containerd) and `docker
//! load` (old and new) all read it; nothing is pulled or pushed.

use std::{collections::HashMap, io::Write, path::Path, str::FromStr};

use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder, Sha256Digest,
};
use serde::Serialize;

use crate::{Error, ImageSpec};

/// Annotation containerd takes the image name from.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI reference-name annotation (the tag, as Docker writes it).
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Docker's `manifest.json` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: Vec<&'a str>,
    layers: Vec<String>,
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A blob: its digest and bytes.
struct Blob {
    digest: Sha256Digest,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        let digest = sha256(&bytes);
        let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
        let digest = Sha256Digest::from_str(hex).map_err(|e| Error::Spec(e.to_string()))?;
        Ok(Self { digest, bytes })
    }

    /// `sha256:<hex>`, as descriptors and diff IDs spell it.
    fn digest_string(&self) -> String {
        format!("sha256:{}", self.digest.digest())
    }

    fn path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.digest())
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

fn arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_string()),
    }
}

fn spec_err(e: impl std::fmt::Display) -> Error {
    Error::Spec(e.to_string())
}

/// JSON with its object keys sorted: the OCI types hold maps (labels, exposed ports,
/// annotations) as hash maps, whose order would otherwise change the digest run to run.
fn canonical_json<T: Serialize>(x: &T) -> Result<Vec<u8>, Error> {
    let v = serde_json::to_value(x).map_err(spec_err)?;
    serde_json::to_vec(&v).map_err(spec_err)
}

/// Writes `spec` (its root filesystem as one layer) to the archive `out`; returns the
/// manifest's digest (`sha256:…`). The same spec always gives the same bytes.
pub fn write(spec: &ImageSpec, out: &Path) -> Result<String, Error> {
    let layer = Blob::new(spec.rootfs.write_tar(Vec::new())?)?;
    let config = ConfigBuilder::default()
        .user(spec.user.clone())
        .entrypoint(spec.entrypoint.clone())
        .cmd(spec.cmd.clone())
        .env(spec.env.clone())
        .exposed_ports(
            spec.ports
                .iter()
                .map(|p| format!("{p}/tcp"))
                .collect::<Vec<_>>(),
        )
        .working_dir("/".to_string())
        .labels(spec.labels.clone())
        .build()
        .map_err(spec_err)?;
    let image_config = ImageConfigurationBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_string())
                .diff_ids(vec![layer.digest_string()])
                .build()
                .map_err(spec_err)?,
        )
        .build()
        .map_err(spec_err)?;
    let config_blob = Blob::new(canonical_json(&image_config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(config_blob.digest.clone())
                .size(config_blob.size())
                .build()
                .map_err(spec_err)?,
        )
        .layers(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayer)
                .digest(layer.digest.clone())
                .size(layer.size())
                .build()
                .map_err(spec_err)?,
        ])
        .build()
        .map_err(spec_err)?;
    let manifest_blob = Blob::new(canonical_json(&manifest)?)?;
    let reference = spec.reference();
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(manifest_blob.digest.clone())
                .size(manifest_blob.size())
                .platform(
                    PlatformBuilder::default()
                        .architecture(arch())
                        .os(Os::Linux)
                        .build()
                        .map_err(spec_err)?,
                )
                .annotations(HashMap::from([
                    (CONTAINERD_NAME.to_string(), reference.clone()),
                    (OCI_REF_NAME.to_string(), spec.tag.clone()),
                ]))
                .build()
                .map_err(spec_err)?,
        ])
        .build()
        .map_err(spec_err)?;
    let docker = [DockerManifest {
        config: config_blob.path(),
        repo_tags: vec![reference.as_str()],
        layers: vec![layer.path()],
    }];

    let tmp = out.with_extension("tar.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |name: &str, bytes: &[u8]| -> Result<(), Error> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, name, bytes)
            .map_err(|e| Error::io(&tmp, e))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &canonical_json(&index)?)?;
    add("manifest.json", &canonical_json(&docker)?)?;
    for blob in [&layer, &config_blob, &manifest_blob] {
        add(&blob.path(), &blob.bytes)?;
    }
    let mut w = b.into_inner().map_err(|e| Error::io(&tmp, e))?;
    w.flush().map_err(|e| Error::io(&tmp, e))?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(manifest_blob.digest_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rootfs;

    fn spec() -> ImageSpec {
        let mut rootfs = Rootfs::default();
        rootfs.data("/usr/local/bin/app", b"#!binary".to_vec(), 0o755);
        ImageSpec {
            repository: "example.test/app".into(),
            tag: "1.2.3".into(),
            user: "2102:2102".into(),
            entrypoint: vec!["/usr/local/bin/app".into()],
            cmd: vec!["run".into()],
            env: vec!["PATH=/usr/bin".into()],
            ports: vec![4143, 4191, 8080],
            labels: HashMap::from([
                ("a".to_string(), "1".to_string()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into()),
            ]),
            rootfs,
        }
    }

    #[test]
    fn the_same_spec_gives_the_same_archive() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut digests = std::collections::BTreeSet::new();
        let mut bytes = std::collections::BTreeSet::new();
        for i in 0..5 {
            let out = dir.path().join(format!("{i}.tar"));
            digests.insert(write(&spec(), &out).unwrap_or_else(|e| panic!("{e}")));
            bytes.insert(std::fs::read(&out).unwrap_or_default());
        }
        assert_eq!(digests.len(), 1, "{digests:?}");
        assert_eq!(bytes.len(), 1, "archives differ");
        assert!(
            digests
                .iter()
                .all(|d| d.starts_with("sha256:") && d.len() == 71)
        );
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("app.tar");
        write(&spec(), &out).unwrap_or_else(|e| panic!("{e}"));
        let i = crate::inspect::inspect(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.reference, "example.test/app:1.2.3");
        assert_eq!(i.docker_tags, vec!["example.test/app:1.2.3".to_string()]);
        let c = i.config.config().clone().unwrap_or_default();
        assert_eq!(c.user().as_deref(), Some("2102:2102"));
        assert_eq!(
            c.entrypoint().clone().unwrap_or_default(),
            ["/usr/local/bin/app"]
        );
        assert_eq!(c.cmd().clone().unwrap_or_default(), ["run"]);
        let mut ports = c.exposed_ports().clone().unwrap_or_default();
        ports.sort();
        assert_eq!(ports, ["4143/tcp", "4191/tcp", "8080/tcp"]);
        assert!(
            i.files.iter().any(|f| f == "usr/local/bin/app"),
            "{:?}",
            i.files
        );
    }

    #[test]
    fn a_truncated_archive_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("app.tar");
        write(&spec(), &out).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&out).unwrap_or_default();
        // Keep only the first two entries (oci-layout, index.json): the blobs are gone.
        std::fs::write(&out, &bytes[..2048]).unwrap_or_else(|e| panic!("{e}"));
        let e = crate::inspect::inspect(&out)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("not an image archive") || e.contains("app.tar"),
            "{e}"
        );
    }
}
