//! Vigil's container images as OCI archives, built from the release binaries on a machine
//! with no container engine and no registry (`make images`).
//!
//! Owns: what each image contains and how it runs ([`images`]: the same users, paths,
//! entrypoints and ports as `docker/*.Dockerfile`), the root filesystem with exactly the
//! shared libraries the binaries load ([`rootfs`], [`libs`]), the archive format every
//! common loader takes ([`archive`]) and reading an archive back ([`inspect`]).
//! Not: building the binaries (cargo does), loading archives (containerd/docker do).

pub mod archive;
pub mod images;
pub mod inspect;
pub mod libs;
pub mod rootfs;

use std::path::{Path, PathBuf};

pub use rootfs::Rootfs;

/// One image to write.
#[derive(Debug)]
pub struct ImageSpec {
    /// Repository, e.g. `ghcr.io/vigil-mesh/vigil-proxy`.
    pub repository: String,
    /// Tag, e.g. `0.1.0`.
    pub tag: String,
    /// `uid:gid` the container runs as.
    pub user: String,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Environment (`K=V`).
    pub env: Vec<String>,
    /// Exposed TCP ports.
    pub ports: Vec<u16>,
    /// Labels.
    pub labels: std::collections::HashMap<String, String>,
    /// The single layer's contents.
    pub rootfs: Rootfs,
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Why an image could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A binary the image needs is not there.
    #[error(
        "{0} is missing: build the release binaries first (`make images` does: cargo build --release -p vigil-controller -p vigil-proxy -p vigil-testapp)"
    )]
    MissingBinary(PathBuf),
    /// A path that must be a regular file is not.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// A chain of symlinks does not end.
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(PathBuf),
    /// A binary could not be prepared (its shared libraries resolved, or stripped).
    #[error("preparing {binary}: {reason}")]
    Prepare {
        /// The binary.
        binary: PathBuf,
        /// What ldd said.
        reason: String,
    },
    /// A host tool the image carries is not installed.
    #[error("{what} is not installed on this machine ({hint})")]
    MissingHostTool {
        /// What.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// The OCI structures could not be built or parsed.
    #[error("OCI image spec: {0}")]
    Spec(String),
    /// An archive is not a valid image archive.
    #[error("{path} is not an image archive: {reason}")]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
