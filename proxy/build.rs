//! Links `vigil-proxy`'s release build for a small resident footprint, on
//! x86_64-unknown-linux-gnu (where rustc links with its own rust-lld, which the script
//! below is written for; other targets link as before):
//!
//! - the functions listed in `layout/hot-functions.txt` placed together at the start of
//!   `.text` (see `src/link_layout.rs` for why and how);
//! - relative relocations packed (`-z pack-relative-relocs`, DT_RELR): the table the
//!   dynamic loader reads whole at every start shrinks from ~400 KiB to a few KiB. Only
//!   where the C library linked against supports it (glibc ≥ 2.36 defines the version
//!   `GLIBC_ABI_DT_RELR`, which the linker then requires of the C library at run time, so
//!   an older one refuses to start the binary instead of misrunning it).
//!
//! `VIGIL_PROXY_LAYOUT=off` links without either (to measure the difference); a malformed
//! list fails the build with its line number.

#[path = "src/link_layout.rs"]
#[allow(dead_code, unreachable_pub)]
mod link_layout;

use std::{env, fs, path::PathBuf};

const LIST: &str = "layout/hot-functions.txt";

/// Where a native build's glibc lives (Debian/Ubuntu, then Fedora/RHEL, then others).
const LIBC: &[&str] = &[
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib/libc.so.6",
];

fn main() {
    println!("cargo::rerun-if-changed={LIST}");
    println!("cargo::rerun-if-changed=src/link_layout.rs");
    println!("cargo::rerun-if-env-changed=VIGIL_PROXY_LAYOUT");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let optimised = !matches!(var("OPT_LEVEL").as_str(), "" | "0");
    let target = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !optimised || !target || var("VIGIL_PROXY_LAYOUT") == "off" {
        return;
    }
    let list = fs::read_to_string(LIST).unwrap_or_else(|e| panic!("{LIST}: {e}"));
    match link_layout::script(&list) {
        Ok(Some(script)) => {
            let out = PathBuf::from(var("OUT_DIR")).join("hot.ld");
            fs::write(&out, script).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            println!(
                "cargo::rustc-link-arg-bin=vigil-proxy=-Wl,-T,{}",
                out.display()
            );
        }
        Ok(None) => {}
        Err(e) => panic!("{LIST}: {e}"),
    }
    // Native builds only: a cross build's C library is not the one found here.
    if var("TARGET") == var("HOST") && glibc_has_relr() {
        println!("cargo::rustc-link-arg-bin=vigil-proxy=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc defines `GLIBC_ABI_DT_RELR` (2.36 and later).
fn glibc_has_relr() -> bool {
    const VERSION: &[u8] = b"GLIBC_ABI_DT_RELR";
    LIBC.iter()
        .find_map(|p| fs::read(p).ok())
        .is_some_and(|libc| libc.windows(VERSION.len()).any(|w| w == VERSION))
}
