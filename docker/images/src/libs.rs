//! The shared libraries an ELF binary needs, as the system's dynamic loader resolves them
//! (`ldd`), so an image carries exactly those and nothing else.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::Error;

/// The absolute paths of the libraries (and the dynamic loader) `binary` loads, as named
/// by the loader; empty for a static binary.
pub fn needed(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Prepare {
            binary: binary.to_owned(),
            reason: format!("running ldd: {e} (install libc-bin)"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable")
        || err.contains("not a dynamic executable")
        || text.contains("statically linked")
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(Error::Prepare {
            binary: binary.to_owned(),
            reason: err.trim().to_string(),
        });
    }
    parse(binary, &text)
}

/// Parses `ldd` output: `name => /path (0x…)`, `/path (0x…)` (the loader), or
/// `name (0x…)` (the vDSO, which is not a file).
fn parse(binary: &Path, text: &str) -> Result<Vec<PathBuf>, Error> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, rest)) = line.split_once("=>") {
            let path = rest.trim().split(" (").next().unwrap_or_default().trim();
            if path == "not found" || path.is_empty() {
                return Err(Error::Prepare {
                    binary: binary.to_owned(),
                    reason: format!("library {} not found", name.trim()),
                });
            }
            libs.push(PathBuf::from(path));
        } else if line.starts_with('/') {
            let path = line.split(" (").next().unwrap_or_default().trim();
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse(Path::new("x"), text).unwrap_or_default();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let text = "\tlibmissing.so.3 => not found\n";
        let e = parse(Path::new("bin"), text).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("libmissing.so.3")),
            "{e:?}"
        );
    }

    #[test]
    fn a_real_binary_needs_libc() {
        let libs = needed(Path::new("/bin/sh")).unwrap_or_default();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
