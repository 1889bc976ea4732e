//! The calling thread's glibc cache is emptied before the trim: chunks it holds, scattered
//! over the heap, would otherwise keep their pages resident after everything around them
//! was freed (the proxy after a burst of connections).
//!
//! The only test in its binary: it reads the process's resident anonymous memory, which
//! another test running beside it would change.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

/// Resident anonymous memory of this process, in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn scattered_cached_chunks_do_not_keep_their_pages() {
    use std::ffi::c_void;
    const CLASSES: usize = 64;
    const ROUNDS: usize = CLASSES * CACHED + 32;
    const CACHED: usize = 7;

    let before = resident_anon();
    // Rounds of one chunk per cache class (24..=1032 bytes, ~34 KB a round), ~16 MB.
    let mut rounds: Vec<Vec<*mut c_void>> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let round = (0..CLASSES)
            .map(|class| {
                // SAFETY: plain allocation; each chunk is freed once below.
                let chunk = unsafe { libc::malloc(24 + 16 * class) };
                assert!(!chunk.is_null());
                // Touch it, as a connection's state would be.
                // SAFETY: `chunk` has at least 24 bytes.
                unsafe { chunk.cast::<u8>().write_bytes(0xa5, 24) };
                chunk
            })
            .collect();
        rounds.push(round);
    }
    // The heap's top stays in use: only pages in the middle can be released.
    // SAFETY: as above.
    let top = unsafe { libc::malloc(64) };
    // Freed first, so they fill the thread's cache: seven per class, each from a round of
    // its own (a page of its own).
    let cached = |class: usize, r: usize| r < CLASSES * CACHED && r % CLASSES == class;
    for (r, round) in rounds.iter().enumerate() {
        for (class, &chunk) in round.iter().enumerate() {
            if cached(class, r) {
                // SAFETY: allocated above, freed once.
                unsafe { libc::free(chunk) };
            }
        }
    }
    for (r, round) in rounds.iter().enumerate() {
        for (class, &chunk) in round.iter().enumerate() {
            if !cached(class, r) {
                // SAFETY: allocated above, freed once.
                unsafe { libc::free(chunk) };
            }
        }
    }
    drop(rounds);

    // glibc's trim alone: the cached chunks keep a page each (64 classes × 7).
    // SAFETY: no pointers; MT-safe.
    unsafe { libc::malloc_trim(0) };
    let plain = resident_anon().saturating_sub(before);
    // The crate's trim empties the cache first.
    assert!(
        vigil_malloc_trim::trim(),
        "the cached chunks' pages were not released"
    );
    let drained = resident_anon().saturating_sub(before);
    eprintln!(
        "retained after malloc_trim: {} KB; after trim(): {} KB",
        plain / 1024,
        drained / 1024
    );
    assert!(
        plain >= 1024 * 1024,
        "the setup should leave the cached chunks' pages resident under a plain malloc_trim \
         ({} KB)",
        plain / 1024
    );
    assert!(
        drained <= 256 * 1024,
        "trim() left {} KB resident (a plain malloc_trim left {} KB)",
        drained / 1024,
        plain / 1024
    );
    // SAFETY: allocated above, freed once.
    unsafe { libc::free(top) };
}
