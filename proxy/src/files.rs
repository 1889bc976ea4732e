//! Watching files for changes (inotify via `notify`), debounced.
//!
//! The *directories* are watched, not the files: editors and Kubernetes Secret volumes
//! replace files by renaming (or swapping a `..data` symlink), which a watch on the old
//! inode would miss. A periodic tick is a safety net for missed events.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Debounce window: events within it trigger one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Reload at least this often even without events.
const SAFETY_TICK: Duration = Duration::from_secs(30);

/// Calls `on_change` (on the runtime) whenever one of `paths` may have changed. Runs until
/// the returned watcher is dropped or `stop` is cancelled.
pub fn watch(
    paths: &[&Path],
    stop: tokio_util::sync::CancellationToken,
    mut on_change: impl FnMut() + Send + 'static,
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
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Any event in a watched directory may concern our files (renames of `..data`
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
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
            on_change();
        }
    });
    Ok(watcher)
}
