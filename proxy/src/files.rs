//! Watching files for changes (inotify via `notify`), debounced.
//!
//! The *directories* are watched, not the files: editors and Kubernetes Secret volumes
//! replace files by renaming (or swapping a `..data` symlink), which a watch on the old
//! inode would miss. A periodic tick is a safety net for missed events.
//!
//! Only events that can change a file count ([`changes_content`]): `notify` also reports
//! opens, and the reload's own reads would otherwise schedule the next reload, forever.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
use tokio::sync::mpsc;

/// Debounce window: events within it trigger one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Reload at least this often even without events.
const SAFETY_TICK: Duration = Duration::from_secs(30);

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Read (and applied or rejected on its content): wait for the next change.
    Done,
    /// The files could not be read (descriptors exhausted, a file being replaced): call
    /// again soon, without waiting for another event — the change that triggered this
    /// reload may not produce one.
    Retry,
}

/// Retries of a reload that could not read its files: 100 ms doubling to 5 s.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Calls `on_change` (on the runtime) whenever one of `paths` may have changed, and again
/// with backoff while it answers [`Reloaded::Retry`] (`first` is the answer of the caller's
/// own initial load). Runs until the returned watcher is dropped or `stop` is cancelled.
pub fn watch(
    paths: &[&Path],
    stop: tokio_util::sync::CancellationToken,
    first: Reloaded,
    mut on_change: impl FnMut() -> Reloaded + Send + 'static,
) -> notify::Result<RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let names: BTreeSet<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let dirs: BTreeSet<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        if let Ok(ev) = ev
            && changes_content(&ev)
        {
            // Any change in a watched directory may concern our files (renames of `..data`
            // included); filter out obviously unrelated files only.
            let relevant = ev.paths.is_empty()
                || ev.paths.iter().any(|p| {
                    names.contains(p)
                        || p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                        || names.iter().any(|n| n.file_name() == p.file_name())
                });
            if relevant {
                let _ = tx.send(());
            }
        }
    })?;
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAFETY_TICK);
        tick.tick().await;
        let mut retry = (first == Reloaded::Retry).then_some(RETRY_MIN);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
                _ = tokio::time::sleep(retry.unwrap_or(SAFETY_TICK)), if retry.is_some() => {}
            }
            retry = match on_change() {
                Reloaded::Done => None,
                Reloaded::Retry => Some(retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX))),
            };
        }
    });
    Ok(watcher)
}

/// Whether an event can change a file: created, written, renamed, removed, metadata
/// changed, closed after writing, or "events were lost, rescan". Opening or reading is
/// not a change. (The controller's directory watcher applies the same rule.)
pub fn changes_content(ev: &Event) -> bool {
    ev.need_rescan()
        || match ev.kind {
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) | EventKind::Other => false,
            // Backends that cannot say what happened: assume a change.
            EventKind::Any => true,
        }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn one_write_is_one_reload_even_though_the_reload_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "inbound: []\n").unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let (c, f) = (calls.clone(), file.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let _w = watch(&[file.as_path()], stop.clone(), Reloaded::Done, move || {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = std::fs::read(&f); // what every reload does
            Reloaded::Done
        })
        .unwrap();
        std::fs::write(&file, "inbound: []\ngeneration: 2\n").unwrap();
        let start = std::time::Instant::now();
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "no reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Keep reading it meanwhile, as any reader would.
        for _ in 0..100 {
            let _ = std::fs::read(&file).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "reloads without a change");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_reload_that_could_not_read_is_retried_without_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "inbound: []\n").unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        // The initial load failed; the next two attempts fail too, then reading works.
        let _w = watch(
            &[file.as_path()],
            stop.clone(),
            Reloaded::Retry,
            move || {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Reloaded::Retry
                } else {
                    Reloaded::Done
                }
            },
        )
        .unwrap();
        let start = std::time::Instant::now();
        while calls.load(Ordering::SeqCst) < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "retried {} times",
                calls.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Done: no more calls without a change (the safety tick is 30 s away).
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        stop.cancel();
    }
}
