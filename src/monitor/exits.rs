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
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = inotify.readable().await else {
                break;
            };
            match ready.get_inner().0.read_events() {
                Ok(events) => {
                    for event in events {
                        let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                            continue;
                        };
                        // Temporary files start with a dot; the rename brings the real name.
                        if !name.starts_with('.') && sender.send(name.to_string()).is_err() {
                            return;
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(error) => {
                    tracing::error!(%error, "exit watch failed");
                    break;
                }
            }
        }
    });
    Ok(receiver)
}
