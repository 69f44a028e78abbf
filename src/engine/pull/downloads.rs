//! Layer downloads shared by the pulls that want the same blob at the same time, whatever
//! image they pull: the first pull to want a blob starts its download (fetched, verified,
//! unpacked into a staging directory of the layer store); later ones join it. A download
//! runs while at least one pull still holds it; when the last one lets go (cancelled, or
//! failed on another layer) it stops and its staging directory goes.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::super::error::is_no_space;
use super::super::{blocking, EngineError, Result};
use crate::registry::client::{Blob, Client};
use crate::registry::RegistryError;
use crate::storage::images::{decompressed, LayerStore};
use crate::storage::unpack::{unpack_layer, UnpackLimits};

/// The downloads running (or finished and still held), by blob digest.
#[derive(Default)]
pub(crate) struct Downloads {
    list: Mutex<HashMap<String, Weak<Download>>>,
}

/// One blob's download. Every pull that wants it holds an `Arc`; dropping the last one
/// stops it.
pub(crate) struct Download {
    status: watch::Receiver<DownloadStatus>,
    stop: watch::Sender<bool>,
    /// Closed when the download's task has ended (its staging directory gone, unless done).
    ended: watch::Receiver<()>,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Where a download is.
#[derive(Clone)]
pub(crate) enum DownloadStatus {
    /// Bytes of the blob arrived so far.
    Downloading(u64),
    Extracting,
    Done(Arc<Unpacked>),
    Failed(Arc<EngineError>),
}

/// A layer unpacked into its own staging directory of the layer store. Committing an image
/// moves `dir` into the store; whatever is left goes with the last holder.
pub(crate) struct Unpacked {
    pub dir: PathBuf,
    pub diff_id: String,
    pub bytes: u64,
    _staging: tempfile::TempDir,
}

/// What a download needs to run on its own.
pub(crate) struct Source {
    pub client: Client,
    pub reference: oci_client::Reference,
    pub blob: Blob,
    pub store: LayerStore,
    pub limits: UnpackLimits,
}

/// What [`Downloads::claim`] found.
pub(crate) enum Claim {
    /// A download of the blob (started now, or joined).
    Download(Arc<Download>),
    /// The layer reached the store meanwhile (another pull committed it).
    Present,
}

impl Downloads {
    /// The download of `source.blob`: the one some pull holds, else — when `present` says
    /// the layer is not in the store yet — a new one. Checked under one lock, so a layer is
    /// never fetched twice: a pull lets go of its downloads only after committing them.
    pub(crate) fn claim(&self, source: Source, present: impl FnOnce() -> bool) -> Claim {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|_, download| download.strong_count() > 0);
        let digest = source.blob.digest.clone();
        if let Some(download) = list.get(&digest).and_then(Weak::upgrade) {
            if !matches!(*download.status.borrow(), DownloadStatus::Failed(_)) {
                return Claim::Download(download);
            }
        }
        if present() {
            return Claim::Present;
        }
        let (status_sender, status) = watch::channel(DownloadStatus::Downloading(0));
        let (stop, stopped) = watch::channel(false);
        let (task_running, ended) = watch::channel(());
        tokio::spawn(async move {
            let outcome = fetch_layer(&source, &status_sender, stopped).await;
            status_sender.send_replace(match outcome {
                Ok(unpacked) => DownloadStatus::Done(Arc::new(unpacked)),
                Err(error) => DownloadStatus::Failed(Arc::new(error)),
            });
            drop(task_running);
        });
        let download = Arc::new(Download {
            status,
            stop,
            ended,
        });
        list.insert(digest, Arc::downgrade(&download));
        Claim::Download(download)
    }
}

impl Download {
    pub(crate) fn subscribe(&self) -> watch::Receiver<DownloadStatus> {
        self.status.clone()
    }

    /// Lets go of the download for a pull that failed or was cancelled. When this pull was
    /// its last holder, the download stops and this waits until its task has ended, so the
    /// pull's failure is reported only once its staging directory is gone; a download other
    /// pulls still hold goes on for them.
    pub(crate) async fn release(self: Arc<Self>) {
        if let Some(download) = Arc::into_inner(self) {
            let mut ended = download.ended.clone();
            drop(download);
            while ended.changed().await.is_ok() {}
        }
    }
}

/// Fetches the blob into the staging directory, then unpacks it with the hostile-safe
/// unpacker; stops within a chunk (or one read of the unpacker) once `stop` is set.
async fn fetch_layer(
    source: &Source,
    status: &watch::Sender<DownloadStatus>,
    stop: watch::Receiver<bool>,
) -> Result<Unpacked> {
    let staging = source
        .store
        .staging()
        .map_err(|e| EngineError::io("layer store", e))?;
    let file = staging.path().join("blob");
    let dir = staging.path().join("layer");
    let download = source
        .client
        .download(&source.reference, &source.blob, &file, &stop, |n| {
            status.send_modify(|status| {
                if let DownloadStatus::Downloading(done) = status {
                    *done += n;
                }
            })
        });
    // Also while connecting or waiting for the first byte, which `download` does not watch.
    let mut stopped = stop.clone();
    tokio::select! {
        done = download => done?,
        _ = stopped.wait_for(|s| *s) => return Err(RegistryError::Cancelled.into()),
    }
    status.send_replace(DownloadStatus::Extracting);
    let digest = source.blob.digest.clone();
    let limits = source.limits;
    let unpack_dir = dir.clone();
    let unpacked = blocking(move || {
        let opened = std::fs::File::open(&file).map_err(|e| EngineError::io(file.display(), e))?;
        let reader = Stoppable {
            inner: std::io::BufReader::with_capacity(256 << 10, opened),
            stop,
        };
        std::fs::create_dir(&unpack_dir).map_err(|e| EngineError::io(unpack_dir.display(), e))?;
        let layer = decompressed(reader).map_err(|e| layer_error(&digest, e))?;
        let unpacked = unpack_layer(layer, &unpack_dir, limits).map_err(|e| {
            if e.to_string().contains("pull cancelled") {
                EngineError::from(RegistryError::Cancelled)
            } else {
                layer_error(&digest, e)
            }
        })?;
        let _ = std::fs::remove_file(&file);
        Ok(unpacked)
    })
    .await?;
    Ok(Unpacked {
        dir,
        diff_id: unpacked.diff_id,
        bytes: unpacked.bytes,
        _staging: staging,
    })
}

/// A layer that cannot be unpacked: a full disk is `NoSpace`, anything else the registry's
/// fault (a blob whose digest matched but whose content is no layer).
fn layer_error(digest: &str, error: impl std::error::Error + 'static) -> EngineError {
    if is_no_space(&error) {
        EngineError::NoSpace(format!("layer {digest}: {error}"))
    } else {
        EngineError::RegistryError(format!("layer {digest}: {error}"))
    }
}

/// A reader that fails once `stop` is set, so an unpack stops within one read.
struct Stoppable<R> {
    inner: R,
    stop: watch::Receiver<bool>,
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if *self.stop.borrow() {
            return Err(std::io::Error::other("pull cancelled"));
        }
        self.inner.read(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Connection;

    /// A claim of a blob from a registry that never answers (a listener that accepts
    /// nothing), so the download stays running.
    fn source(store: &LayerStore, port: u16) -> Source {
        Source {
            client: Client::new(&Connection::default()).unwrap(),
            reference: format!("127.0.0.1:{port}/app:1").parse().unwrap(),
            blob: Blob {
                media_type: String::new(),
                digest: format!("sha256:{}", "ab".repeat(32)),
                size: 10,
            },
            store: store.clone(),
            limits: UnpackLimits::default(),
        }
    }

    fn staging_dirs(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0)
    }

    /// Waits up to 2 s for `count` staging directories.
    async fn until_staging_dirs(dir: &std::path::Path, count: usize) {
        for _ in 0..200 {
            if staging_dirs(dir) == count {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(staging_dirs(dir), count);
    }

    #[tokio::test]
    async fn pulls_of_one_blob_share_a_download_that_stops_when_the_last_lets_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::new(dir.path());
        let downloads = Downloads::default();
        let Claim::Download(first) = downloads.claim(source(&store, port), || false) else {
            panic!("not started");
        };
        let Claim::Download(second) = downloads.claim(source(&store, port), || true) else {
            panic!("not joined");
        };
        assert!(
            Arc::ptr_eq(&first, &second),
            "a second download of one blob"
        );
        assert!(matches!(
            *first.subscribe().borrow(),
            DownloadStatus::Downloading(0)
        ));
        until_staging_dirs(dir.path(), 1).await;
        // One pull lets go: the download goes on for the other.
        drop(first);
        assert!(!*second.stop.borrow());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(staging_dirs(dir.path()), 1);
        drop(second);
        // The last one let go: stopped, and its staging directory is gone.
        until_staging_dirs(dir.path(), 0).await;
        // Nobody holds it and the layer is in the store: nothing to fetch.
        assert!(matches!(
            downloads.claim(source(&store, port), || true),
            Claim::Present
        ));
    }
}
