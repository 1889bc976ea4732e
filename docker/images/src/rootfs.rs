//! A container's root filesystem as an ordered set of entries, written as one
//! deterministic tar layer: the same inputs give the same bytes (sorted paths, parents
//! first, mtime 0, owner root), so the same binaries give the same image digest.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Component, Path, PathBuf},
};

use crate::{Error, libs};

/// One entry of the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { src: PathBuf, mode: u32 },
    Data { bytes: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
}

/// A root filesystem being assembled; paths are absolute, inside the image.
#[derive(Clone, Debug, Default)]
pub struct Rootfs {
    entries: BTreeMap<PathBuf, Entry>,
}

/// Top-level directories that merged-/usr hosts (Debian 12) make symlinks into /usr; the
/// image mirrors the host so library paths the loader names resolve the same way.
const MERGED_USR: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

impl Rootfs {
    /// An empty root with `/tmp` (1777) and the merged-/usr links of the host.
    pub fn new() -> Result<Self, Error> {
        let mut r = Self::default();
        r.dir("/tmp", 0o1777);
        for top in MERGED_USR {
            let p = Path::new(top);
            if p.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                let target = std::fs::read_link(p).map_err(|e| Error::io(p, e))?;
                r.dir(normalize(&Path::new("/").join(&target)), 0o755);
                r.symlink(p, &target);
            }
        }
        Ok(r)
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) {
        let path = path.as_ref().to_path_buf();
        self.parents(&path);
        self.entries.insert(path, Entry::Dir { mode });
    }

    /// Adds a symlink at `path` pointing at `target` (as written, relative or absolute).
    pub fn symlink(&mut self, path: impl AsRef<Path>, target: impl AsRef<Path>) {
        let path = path.as_ref().to_path_buf();
        self.parents(&path);
        self.entries.insert(
            path,
            Entry::Symlink {
                target: target.as_ref().to_path_buf(),
            },
        );
    }

    /// Adds a file with the given contents.
    pub fn data(&mut self, path: impl AsRef<Path>, bytes: impl Into<Vec<u8>>, mode: u32) {
        let path = path.as_ref().to_path_buf();
        self.parents(&path);
        self.entries.insert(
            path,
            Entry::Data {
                bytes: bytes.into(),
                mode,
            },
        );
    }

    /// Copies the host file `src` to `dst` in the image (must be a regular file).
    pub fn file(&mut self, src: &Path, dst: impl AsRef<Path>, mode: u32) -> Result<(), Error> {
        let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
        if !meta.is_file() {
            return Err(Error::NotAFile(src.to_owned()));
        }
        let dst = dst.as_ref().to_path_buf();
        self.parents(&dst);
        self.entries.insert(
            dst,
            Entry::File {
                src: src.to_owned(),
                mode,
            },
        );
        Ok(())
    }

    /// Copies the ELF binary `src` to `dst` together with every shared library it loads
    /// (at the paths the loader names, symlinks included).
    pub fn binary(&mut self, src: &Path, dst: impl AsRef<Path>) -> Result<(), Error> {
        self.file(src, dst, 0o755)?;
        self.libraries_of(src)
    }

    /// [`Self::binary`] without its debug information (`strip --strip-debug`: symbols
    /// stay, so backtraces still name functions). The release profile keeps line tables
    /// for profiling; an image does not need them (the controller: 105 → 26 MB).
    pub fn stripped_binary(&mut self, src: &Path, dst: impl AsRef<Path>) -> Result<(), Error> {
        if !src.is_file() {
            return Err(Error::MissingBinary(src.to_owned()));
        }
        let tmp = std::env::temp_dir().join(format!(
            "vigil-images-{}-{}",
            std::process::id(),
            src.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let out = std::process::Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&tmp)
            .arg(src)
            .output()
            .map_err(|e| Error::MissingHostTool {
                what: format!("strip ({e})"),
                hint: "apt-get install binutils".into(),
            })?;
        let bytes = std::fs::read(&tmp);
        let _ = std::fs::remove_file(&tmp);
        if !out.status.success() {
            return Err(Error::Prepare {
                binary: src.to_owned(),
                reason: format!("strip: {}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        self.data(dst, bytes.map_err(|e| Error::io(&tmp, e))?, 0o755);
        self.libraries_of(src)
    }

    /// Adds the shared libraries `elf` loads (not `elf` itself).
    pub fn libraries_of(&mut self, elf: &Path) -> Result<(), Error> {
        for lib in libs::needed(elf)? {
            self.host_path(&lib)?;
        }
        Ok(())
    }

    /// Mirrors the host path `p` into the image: the symlinks on its last component
    /// become symlinks, the regular file at the end is copied (directories on the way are
    /// taken as they resolve on the host).
    pub fn host_path(&mut self, p: &Path) -> Result<(), Error> {
        let mut cur = p.to_path_buf();
        for _ in 0..16 {
            let parent = cur.parent().unwrap_or_else(|| Path::new("/"));
            let parent = parent.canonicalize().map_err(|e| Error::io(parent, e))?;
            let name = cur
                .file_name()
                .ok_or_else(|| Error::NotAFile(cur.clone()))?;
            let here = parent.join(name);
            let meta = here.symlink_metadata().map_err(|e| Error::io(&here, e))?;
            if meta.is_symlink() {
                let target = std::fs::read_link(&here).map_err(|e| Error::io(&here, e))?;
                self.symlink(&here, &target);
                cur = normalize(&parent.join(target));
            } else {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
                return self.file(&here, &here, mode);
            }
        }
        Err(Error::SymlinkLoop(p.to_owned()))
    }

    /// The paths in the image, sorted (for tests and listings).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.keys().map(PathBuf::as_path)
    }

    fn parents(&mut self, path: &Path) {
        let mut p = path.parent();
        while let Some(dir) = p {
            if dir == Path::new("/") || dir.as_os_str().is_empty() {
                break;
            }
            self.entries
                .entry(dir.to_path_buf())
                .or_insert(Entry::Dir { mode: 0o755 });
            p = dir.parent();
        }
    }

    /// Writes the layer as an uncompressed tar.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W, Error> {
        let mut b = tar::Builder::new(out);
        b.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.entries {
            let rel = path.strip_prefix("/").unwrap_or(path);
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            let res = match entry {
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, rel, std::io::empty())
                }
                Entry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, rel, target)
                }
                Entry::Data { bytes, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, rel, bytes.as_slice())
                }
                Entry::File { src, mode } => {
                    let f = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
                    let len = f.metadata().map_err(|e| Error::io(src, e))?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(len);
                    b.append_data(&mut h, rel, f)
                }
            };
            res.map_err(|e| Error::io(path, e))?;
        }
        b.into_inner()
            .map_err(|e| Error::io(Path::new("<layer>"), e))
    }
}

/// `a/b/../c` → `a/c` without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(x) => out.push(x),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(r: &Rootfs) -> Vec<(String, tar::EntryType, u32)> {
        let bytes = r.write_tar(Vec::new()).unwrap_or_default();
        let mut a = tar::Archive::new(bytes.as_slice());
        let mut out = Vec::new();
        for e in a.entries().into_iter().flatten().flatten() {
            let h = e.header();
            out.push((
                e.path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                h.entry_type(),
                h.mode().unwrap_or_default(),
            ));
        }
        out
    }

    #[test]
    fn parents_come_first_and_output_is_deterministic() {
        let mut r = Rootfs::default();
        r.data("/usr/local/bin/x", b"x".to_vec(), 0o755);
        r.data("/etc/passwd", b"root:x:0:0::/:/\n".to_vec(), 0o644);
        r.symlink("/usr/sbin/iptables", "xtables-nft-multi");
        let names: Vec<String> = listing(&r).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/passwd",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/x",
                "usr/sbin",
                "usr/sbin/iptables"
            ]
        );
        let a = r.write_tar(Vec::new()).unwrap_or_default();
        let b = r.write_tar(Vec::new()).unwrap_or_default();
        assert!(!a.is_empty() && a == b, "two writes differ");
    }

    #[test]
    fn a_binary_brings_its_libraries_and_their_symlinks() {
        let mut r = Rootfs::new().unwrap_or_default();
        let sh = Path::new("/bin/sh").canonicalize().unwrap_or_default();
        r.binary(&sh, "/bin-under-test/sh")
            .unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<String> = r.paths().map(|p| p.display().to_string()).collect();
        assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.contains("ld-linux")),
            "the loader is missing: {paths:?}"
        );
        // Every symlink in the image points at something in the image.
        for (p, e) in &r.entries {
            if let Entry::Symlink { target } = e {
                let abs = normalize(&p.parent().unwrap_or(Path::new("/")).join(target));
                let resolved = resolve_in(&r, &abs);
                assert!(
                    resolved.is_some(),
                    "{} -> {} dangles",
                    p.display(),
                    target.display()
                );
            }
        }
    }

    /// Follows symlinks inside the image (directory links included).
    fn resolve_in(r: &Rootfs, p: &Path) -> Option<PathBuf> {
        let mut cur = PathBuf::from("/");
        for c in p.components().skip(1) {
            cur.push(c);
            for _ in 0..16 {
                match r.entries.get(&cur) {
                    Some(Entry::Symlink { target }) => {
                        let parent = cur.parent().unwrap_or(Path::new("/")).to_path_buf();
                        cur = normalize(&parent.join(target));
                    }
                    Some(_) => break,
                    None => return None,
                }
            }
        }
        Some(cur)
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let mut r = Rootfs::default();
        let e = r
            .file(Path::new("/etc"), "/x", 0o644)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("/etc")));
    }
}
