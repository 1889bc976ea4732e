//! A local policy directory: `*.yaml` / `*.yml` files holding the same documents as the
//! Kubernetes API (Segment, AccessPolicy, Quarantine) plus local-mode `Workload`s and
//! `Namespace`s.
//!
//! Each file is parsed on its own, document by document. A file with any bad document —
//! unparseable YAML, unknown kind, wrong field, failed CEL rule — keeps the documents it
//! had at its last good version (none, for a new file), and the error is reported as
//! `file:line:column: message`. The other files are unaffected, and nothing here ever
//! panics on input.
//!
//! Read by the controller in local mode (which watches the directory and reloads) and by
//! `vigil explain` / `vigil policy test`, which judge requests against it exactly as the
//! controller would compile it — without linking the controller.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use vigil_crds::{AccessPolicy, Quarantine, Segment, Workload};
use vigil_index::{NamespaceMeta, Resource, Resources};

/// The documents of one file.
#[derive(Debug, Default)]
struct FileState {
    contents: Vec<u8>,
    /// Documents from the last version that parsed completely.
    good: Vec<Resource>,
    error: Option<String>,
}

/// A directory of policy files.
#[derive(Debug)]
pub struct PolicyDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

/// A problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub file: PathBuf,
    /// `line:column: message` or a whole-file message.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.message)
    }
}

impl PolicyDir {
    /// A source over `dir` (nothing is read until [`Self::load`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)reads the directory. Returns every resource (good documents of every file;
    /// last good ones for files now in error) and the current errors.
    pub fn load(&mut self) -> (Resources, Vec<FileError>) {
        let mut present = Vec::new();
        let mut errors = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    let yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
                    let hidden = path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                    if yaml && !hidden && path.is_file() {
                        present.push(path);
                    }
                }
            }
            Err(e) => errors.push(FileError {
                file: self.dir.clone(),
                message: format!(" cannot read directory: {e}"),
            }),
        }
        present.sort();
        self.files.retain(|p, _| present.contains(p));
        for path in &present {
            let contents = match std::fs::read(path) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(FileError {
                        file: path.clone(),
                        message: format!(" cannot read: {e}"),
                    });
                    continue;
                }
            };
            let state = self.files.entry(path.clone()).or_default();
            if state.contents != contents || (state.good.is_empty() && state.error.is_none()) {
                state.contents = contents;
                match parse_file(&state.contents) {
                    Ok(docs) => {
                        state.good = docs;
                        state.error = None;
                    }
                    Err(msg) => {
                        tracing::error!(file = %path.display(), error = %msg, "policy file rejected; keeping its last good version");
                        state.error = Some(msg);
                    }
                }
            }
            if let Some(msg) = &state.error {
                errors.push(FileError {
                    file: path.clone(),
                    message: msg.clone(),
                });
            }
        }
        let mut resources = Resources::default();
        for state in self.files.values() {
            for r in &state.good {
                resources.apply(r.clone());
            }
        }
        (resources, errors)
    }
}

/// Parses every document of a file, or says where the first problem is.
fn parse_file(contents: &[u8]) -> Result<Vec<Resource>, String> {
    let text = std::str::from_utf8(contents).map_err(|e| format!(" not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (start_line, doc) in split_documents(text) {
        if doc.trim().is_empty()
            || doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        out.push(
            parse_document(doc)
                .map_err(|(line, col, msg)| format!("{}:{col}: {msg}", start_line + line - 1))?,
        );
    }
    Ok(out)
}

/// Splits at `---` lines; yields (line number of the document's first line, text).
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u64;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i as u64 + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// One document -> a resource; errors as (line within the document, column, message).
fn parse_document(doc: &str) -> Result<Resource, (u64, u64, String)> {
    let header: Header = typed(doc)?;
    let r = match (header.api_version.as_str(), header.kind.as_str()) {
        ("policy.vigil.dev/v1alpha1", "Segment") => Resource::Segment(checked::<Segment>(doc)?),
        ("policy.vigil.dev/v1alpha1", "AccessPolicy") => {
            Resource::AccessPolicy(checked::<AccessPolicy>(doc)?)
        }
        ("policy.vigil.dev/v1alpha1", "Quarantine") => {
            Resource::Quarantine(checked::<Quarantine>(doc)?)
        }
        ("local.vigil.dev/v1alpha1", "Workload") => Resource::Workload(checked::<Workload>(doc)?),
        ("v1", "Namespace") => {
            #[derive(serde::Deserialize)]
            struct Ns {
                metadata: kube::core::ObjectMeta,
            }
            let ns: Ns = typed(doc)?;
            let name = ns.metadata.name.clone().ok_or((
                1,
                1,
                "Namespace without metadata.name".to_string(),
            ))?;
            Resource::Namespace(
                name,
                NamespaceMeta {
                    labels: ns.metadata.labels.unwrap_or_default(),
                    annotations: ns.metadata.annotations.unwrap_or_default(),
                },
            )
        }
        (v, k) => {
            return Err((
                1,
                1,
                format!(
                    "unknown kind {k:?} ({v:?}); expected Segment, AccessPolicy, Quarantine (policy.vigil.dev/v1alpha1), Workload (local.vigil.dev/v1alpha1) or Namespace (v1)"
                ),
            ));
        }
    };
    Ok(r)
}

/// Deserialises and runs the CRD's CEL rules, as the apiserver would.
fn checked<K>(doc: &str) -> Result<K, (u64, u64, String)>
where
    K: DeserializeOwned + kube::CustomResourceExt + serde::Serialize + kube::Resource,
{
    let raw: serde_json::Value = typed(doc)?;
    let unknown = vigil_crds::unknown_fields::<K>(&raw);
    if !unknown.is_empty() {
        return Err((
            1,
            1,
            format!("unknown field(s) {} (a typo?)", unknown.join(", ")),
        ));
    }
    let k: K = typed(doc)?;
    if k.meta().name.is_none() {
        return Err((1, 1, "metadata.name is required".into()));
    }
    vigil_crds::validate(&k).map_err(|errs| (1, 1, errs.join("; ")))?;
    Ok(k)
}

fn typed<T: DeserializeOwned>(doc: &str) -> Result<T, (u64, u64, String)> {
    serde_saphyr::from_str::<T>(doc).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let msg = e.without_snippet().to_string();
        // The message carries its own, document-relative position; ours (file-relative)
        // replaces it.
        let msg = msg
            .strip_prefix("error: ")
            .map(|m| m.split_once(": ").map_or(m, |(_, rest)| rest).to_string())
            .unwrap_or(msg);
        let msg = match msg.rfind(" at line ") {
            Some(i) if msg[i..].contains(", column ") => msg[..i].to_string(),
            _ => msg,
        };
        (line.max(1), col.max(1), msg)
    })
}

#[cfg(test)]
mod tests;
