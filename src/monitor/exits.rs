//! Learns of exits the moment a monitor renames an exit file into place (inotify), never by
//! polling.

use std::path::Path;

use nix::sys::inotify::AddWatchFlags;
use tokio::sync::mpsc;

/// Watches `dir` and sends the name (container id) of every exit file that appears. Must be
/// started before the directory is scanned at start-up, so no exit falls between the two.
pub fn watch(dir: &Path) -> std::io::Result<mpsc::UnboundedReceiver<String>> {
    let inotify = crate::inotify::new()?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
    )?;
    let inotify = crate::inotify::register(inotify)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = inotify.readable().await else {
                break;
            };
            let names: Vec<String> = match ready.get_inner().0.read_events() {
                Ok(events)
                    if events
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)) =>
                {
                    // The kernel dropped events: every exit file there may be new.
                    tracing::warn!("exit watch overflowed; rescanning {}", dir.display());
                    exit_files(&dir)
                }
                Ok(events) => events
                    .iter()
                    .filter_map(|e| e.name.as_ref()?.to_str().map(str::to_string))
                    .collect(),
                Err(nix::errno::Errno::EAGAIN) => {
                    ready.clear_ready();
                    continue;
                }
                Err(error) => {
                    // Exits are still found by the next start-up scan and by `Sync`.
                    tracing::error!(%error, "exit watch failed; exits are no longer seen as they happen");
                    break;
                }
            };
            for name in names {
                // Temporary files start with a dot; the rename brings the real name.
                if !name.starts_with('.') && sender.send(name).is_err() {
                    return;
                }
            }
        }
    });
    Ok(receiver)
}

/// Names of the exit files in `dir`.
fn exit_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
