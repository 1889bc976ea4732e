//! Local mode's source: the policy directory ([`PolicyDir`], read by `vigil-policy-dir`),
//! watched so that it reloads when, and only when, something in it changed.
//!
//! inotify reports more than changes: `notify` also asks for `IN_OPEN`, so every read of
//! the directory — the reload's own included — produces events. Reacting to those made
//! each reload trigger the next one, forever (about 17 a second after the first edit).
//! Only events that can change what a reload reads get through ([`changes_content`]).
//!
//! An edit is several events (open, write, close; or an editor's temporary file and a
//! rename), so a reload waits until the directory has been quiet for [`QUIET`] — but no
//! longer than [`MAX_DELAY`] after the first event, so a file that is rewritten without
//! pause is still picked up.

use std::{sync::Arc, time::Duration};

use notify::{
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
use tokio::sync::mpsc;
use vigil_policy_dir::PolicyDir;

use crate::{
    source::{self, Debounce, Loaded, Source},
    state::State,
};

/// Reload once no event arrived for this long.
pub const QUIET: Duration = Duration::from_millis(100);
/// Reload at the latest this long after the first event of a burst.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Whether an event can change what [`PolicyDir::load`] reads: a file created, written,
/// renamed, removed or its metadata changed (a `chmod` can make a file readable), a
/// close after writing, or the kernel's "events were lost, rescan" flag. Opening or
/// reading a file — what a reload itself does — is not a change. (The proxy's file
/// watcher applies the same rule, `vigil_proxy::files::changes_content`; the two crates
/// share no library where an 8-line predicate over `notify` events would belong.)
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

impl Source for PolicyDir {
    const WHAT: &'static str = "local policy directory";

    fn load(&mut self) -> Loaded {
        // A newly rejected file is logged by `PolicyDir::load` itself, once.
        let (resources, errors) = PolicyDir::load(self);
        Loaded {
            resources,
            errors: errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Watches the directory and reloads it into `state` after each change ([`source::run`]).
/// The watcher stops when the returned value is dropped; the reload task is pushed to
/// `tasks`.
pub fn start(
    dir: PolicyDir,
    state: Arc<State>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> notify::Result<RecommendedWatcher> {
    let path = dir.dir().to_path_buf();
    let (changed_tx, changed) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        let changed = match &ev {
            Ok(ev) => changes_content(ev),
            Err(e) => {
                // Events may have been lost: reading again is the safe answer.
                tracing::warn!(error = %e, "watching the local policy directory");
                true
            }
        };
        if changed {
            let _ = changed_tx.send(());
        }
    })?;
    watcher.watch(&path, RecursiveMode::NonRecursive)?;
    let debounce = Debounce {
        quiet: QUIET,
        max: MAX_DELAY,
    };
    tasks.push(tokio::spawn(source::run(dir, changed, debounce, state)));
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, Flag, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event::new(kind)
    }

    #[test]
    fn opening_and_reading_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
            EventKind::Other,
        ] {
            assert!(!changes_content(&ev(kind)), "{kind:?}");
        }
    }

    #[test]
    fn writes_renames_removals_and_rescans_are_changes() {
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(changes_content(&ev(kind)), "{kind:?}");
        }
        assert!(changes_content(
            &ev(EventKind::Other).set_flag(Flag::Rescan)
        ));
    }
}
