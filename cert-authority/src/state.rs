//! The CA state directory: a manifest plus immutable key and certificate files.
//!
//! ```text
//! STATE_DIR/            (0700)
//!   ca.json             manifest: trust domain, which files are the roots / issuer / token key
//!   ca.lock             advisory lock; writers hold it exclusively, readers shared
//!   root-<id>.crt|.key  one pair per root (a retiring root keeps no key)
//!   issuer-<id>.crt|.key
//!   token-<id>.key      HMAC key for bootstrap tokens
//! ```
//!
//! Every file is written once under a fresh name (temp file, fsync, rename, mode 0600),
//! and the manifest is replaced atomically *last*, so a crash at any point leaves either
//! the old or the new state, never a mix. Files the manifest no longer names are removed
//! afterwards. Nothing here ever creates a CA by itself: a missing, partial or corrupt
//! state is an error for the operator to resolve.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The manifest file name.
pub const MANIFEST: &str = "ca.json";
const LOCK: &str = "ca.lock";
const FORMAT: u32 = 1;
/// Prefixes of the files this module manages (so cleanup never touches anything else).
const MANAGED_PREFIXES: [&str; 3] = ["root-", "issuer-", "token-"];

/// The manifest: which files make up the CA, and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub format: u32,
    pub trust_domain: String,
    pub issuer_ttl_secs: u64,
    pub root_ttl_secs: u64,
    pub bundle_sequence: u64,
    /// `roots[0]` is the active root (it has a key); the rest are retiring.
    pub roots: Vec<RootEntry>,
    pub issuer: KeyedCert,
    pub token_key: String,
}

/// A root certificate in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RootEntry {
    pub cert: String,
    /// Present for the active root only.
    pub key: Option<String>,
    /// Unix seconds after which a retiring root leaves the bundle.
    pub retire_after: Option<u64>,
}

/// A certificate and its key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyedCert {
    pub cert: String,
    pub key: String,
}

/// Problems with the state directory. Messages say what to check.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No CA here yet.
    #[error(
        "no CA state in {0}: run `vigil ca init --state-dir {0}` first, or, if a `vigil-controller --state-dir {0}` is starting, wait until it is ready (it creates the CA on its first start)"
    )]
    NotInitialized(PathBuf),
    /// `init` on a directory that already holds CA files.
    #[error(
        "{0} already holds CA state; refusing to overwrite it (a new root would cut off every workload). Use `vigil ca rotate` or choose an empty directory"
    )]
    AlreadyInitialized(PathBuf),
    /// A file the state needs is missing.
    #[error(
        "CA state in {dir} is incomplete: {missing} is missing. Restore the directory from backup; Vigil never regenerates a CA on its own"
    )]
    Partial {
        /// The state directory.
        dir: PathBuf,
        /// The missing file.
        missing: String,
    },
    /// A file is unreadable as what it should be.
    #[error("CA state file {file} is corrupt: {reason}. Restore it from backup")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Files that do not belong together.
    #[error("CA state in {dir} is inconsistent: {reason}. Restore the directory from backup")]
    Mismatch {
        /// The state directory.
        dir: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A key file readable by others.
    #[error(
        "{file} has mode {mode:o}; CA key files must not be accessible to group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A newer or unknown manifest format.
    #[error("{file} has format {found}; this Vigil understands format {FORMAT}")]
    UnsupportedFormat {
        /// The manifest.
        file: PathBuf,
        /// Its format number.
        found: u32,
    },
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A CA state directory.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    path: PathBuf,
}

/// Holds the directory's advisory lock until dropped.
pub(crate) struct LockGuard(#[allow(dead_code)] File);

impl StateDir {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (mode 0700) if needed.
    pub(crate) fn create(&self) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| self.io(&self.path, source))
    }

    /// Takes the lock: exclusive for writers, shared for readers.
    pub(crate) fn lock(&self, exclusive: bool) -> Result<LockGuard, StateError> {
        let path = self.path.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| self.io(&path, source))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|source| self.io(&path, source))?;
        Ok(LockGuard(file))
    }

    /// Reads the manifest, or `None` if the directory holds no CA at all.
    ///
    /// Key material without a manifest is a partial state, not "no CA".
    pub(crate) fn read_manifest(&self) -> Result<Option<Manifest>, StateError> {
        let path = self.path.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(stray) = self.managed_files()?.into_iter().next() {
                    return Err(StateError::Partial {
                        dir: self.path.clone(),
                        missing: format!("{MANIFEST} (but {stray} exists)"),
                    });
                }
                return Ok(None);
            }
            Err(source) => return Err(self.io(&path, source)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                file: path.clone(),
                reason: e.to_string(),
            })?;
        if manifest.format != FORMAT {
            return Err(StateError::UnsupportedFormat {
                file: path,
                found: manifest.format,
            });
        }
        Ok(Some(manifest))
    }

    /// Atomically replaces the manifest.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StateError::Corrupt {
            file: self.path.join(MANIFEST),
            reason: e.to_string(),
        })?;
        self.write_atomic(MANIFEST, &json)
    }

    /// Reads a file the manifest names; a missing file means a partial state. Key files
    /// must not be group/other accessible.
    pub(crate) fn read(&self, name: &str, secret: bool) -> Result<Vec<u8>, StateError> {
        let path = self.path.join(name);
        if name.contains('/') || name.starts_with('.') {
            return Err(StateError::Corrupt {
                file: self.path.join(MANIFEST),
                reason: format!("file name {name:?} points outside the state directory"),
            });
        }
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::Partial {
                    dir: self.path.clone(),
                    missing: name.to_owned(),
                });
            }
            Err(source) => return Err(self.io(&path, source)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if secret && mode & 0o077 != 0 {
            return Err(StateError::InsecurePermissions { file: path, mode });
        }
        fs::read(&path).map_err(|source| self.io(&path, source))
    }

    /// Writes a file (mode 0600) atomically; see [`write_private_file`].
    pub(crate) fn write_atomic(&self, name: &str, contents: &[u8]) -> Result<(), StateError> {
        let target = self.path.join(name);
        write_private_file(&target, contents).map_err(|source| self.io(&target, source))
    }

    /// Removes managed files that `manifest` does not name (after a rotation).
    pub(crate) fn remove_unreferenced(&self, manifest: &Manifest) -> Result<(), StateError> {
        let mut keep: Vec<&str> = vec![
            &manifest.issuer.cert,
            &manifest.issuer.key,
            &manifest.token_key,
        ];
        for r in &manifest.roots {
            keep.push(&r.cert);
            if let Some(k) = &r.key {
                keep.push(k);
            }
        }
        for name in self.managed_files()? {
            if !keep.contains(&name.as_str()) {
                let path = self.path.join(&name);
                fs::remove_file(&path).map_err(|source| self.io(&path, source))?;
            }
        }
        Ok(())
    }

    /// True if the directory has any file at all besides the lock (used by `init`).
    pub(crate) fn has_any_state(&self) -> Result<bool, StateError> {
        Ok(self.path.join(MANIFEST).exists() || !self.managed_files()?.is_empty())
    }

    fn managed_files(&self) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(&self.path, source)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| self.io(&self.path, source))?;
            if let Some(name) = entry.file_name().to_str()
                && MANAGED_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn io(&self, path: &Path, source: io::Error) -> StateError {
        StateError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl Manifest {
    pub(crate) const FORMAT: u32 = FORMAT;
}

/// Writes `contents` to `path` atomically with mode 0600: a temp file in the same
/// directory, fsync, rename over `path`, fsync the directory. Readers (a proxy watching
/// its certificate files, say) see the old file or the new one, never a mix.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
