//! `PullImage`: resolves the reference, then runs the transfer as a job. Layers the store
//! already has (by blob digest, or by the diff id the config names) are not fetched; the
//! others download several at once — shared with any other pull wanting the same blob
//! (`downloads`) — into staging directories of the layer store, are unpacked by the
//! hostile-safe unpacker and checked against the config's diff ids. The image record is
//! committed only when everything is there: a failure, a cancel or a crash leaves nothing
//! (a staging directory goes with the last job holding it, or with the next start's sweep).

pub(crate) mod downloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::images::{claim_names, image_event};
use super::jobs::{Job, LayerProgress};
use super::{blocking, Caller, Engine, EngineError, Result};
use crate::registry::client::{Blob, Client, ImageManifest};
use crate::registry::conf::RegistriesConf;
use crate::registry::{auth, names, read_cert_dir, Connection, Platform, RegistryError};
use crate::storage::images::{finish, LayerStore, Staged};
use crate::storage::unpack::UnpackLimits;
use downloads::{Claim, Download, DownloadStatus, Downloads, Source, Unpacked};

/// The layers a pull fetched, by their index in the manifest, held until the image is
/// committed: a pull that joins one meanwhile finds it, and the staging directories stay.
type Fetched = HashMap<usize, FetchedLayer>;

/// A layer a pull fetched: its download, held until the image is committed, and what it
/// unpacked.
type FetchedLayer = (Arc<Download>, Arc<Unpacked>);

/// Layers fetched at once (podman's default is 6 for the whole copy; 3 keeps two cores busy
/// unpacking while the next blobs arrive).
const PARALLEL_LAYERS: usize = 3;

/// When a pull transfers anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Reuse a local image of that name (podman's `--pull=missing`).
    #[default]
    Missing,
    Always,
    /// Pull when the registry's digest for the reference is not the local image's
    /// (podman's `--pull=newer`).
    Newer,
}

impl PullPolicy {
    pub fn parse(text: &str) -> Option<PullPolicy> {
        match text {
            "missing" => Some(PullPolicy::Missing),
            "always" => Some(PullPolicy::Always),
            "newer" => Some(PullPolicy::Newer),
            _ => None,
        }
    }
}

/// `PullImage` options.
#[derive(Clone)]
pub struct PullOptions {
    /// `user:password`.
    pub credentials: Option<String>,
    pub auth_file: Option<PathBuf>,
    pub tls_verify: bool,
    /// Default: `/etc/containers/certs.d/<host[:port]>/`.
    pub cert_dir: Option<PathBuf>,
    pub platform: Option<String>,
    pub policy: PullPolicy,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            credentials: None,
            auth_file: None,
            tls_verify: true,
            cert_dir: None,
            platform: None,
            policy: PullPolicy::Missing,
        }
    }
}

impl std::fmt::Debug for PullOptions {
    /// Never prints the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .field("auth_file", &self.auth_file)
            .field("tls_verify", &self.tls_verify)
            .field("cert_dir", &self.cert_dir)
            .field("platform", &self.platform)
            .field("policy", &self.policy)
            .finish()
    }
}

impl From<RegistryError> for EngineError {
    fn from(error: RegistryError) -> Self {
        let message = error.to_string();
        match error {
            RegistryError::InvalidArgument(_) => EngineError::InvalidArgument(message),
            RegistryError::Authentication(_) => EngineError::AuthenticationFailed(message),
            RegistryError::ManifestUnknown(_) => EngineError::NoSuchImage(message),
            RegistryError::Registry(_) => EngineError::RegistryError(message),
            RegistryError::Cancelled => EngineError::Cancelled(message),
            RegistryError::Local { what, source } => EngineError::io(what, source),
        }
    }
}

/// Everything a pull needs once the call has returned.
struct Plan {
    caller: Caller,
    candidates: Vec<oci_client::Reference>,
    platform: Platform,
    options: PullOptions,
    credentials: Option<(String, String)>,
}

impl Engine {
    /// Checks the request and starts the pull; returns its job at once. Pulls running at the
    /// same time share the download of a layer they both need (`downloads`).
    pub fn pull_image(
        &self,
        caller: Caller,
        reference: &str,
        options: PullOptions,
    ) -> Result<Arc<Job>> {
        let conf = RegistriesConf::load();
        let candidates = names::candidates(reference, &conf)?;
        let platform = match &options.platform {
            Some(text) => Platform::parse(text)?,
            None => Platform::host(),
        };
        let credentials = options
            .credentials
            .as_deref()
            .map(auth::parse_credentials)
            .transpose()?;
        if let Some(file) = &options.auth_file {
            if !file.is_file() {
                return Err(EngineError::InvalidArgument(format!(
                    "AuthFile {} is not a file",
                    file.display()
                )));
            }
        }
        let target = names::full_name(&candidates[0]);
        let job = self.inner().jobs.create("pull", target.clone());
        if options.policy == PullPolicy::Missing {
            let local = candidates
                .iter()
                .find_map(|c| self.lookup_image(&names::full_name(c)).ok());
            if let Some(id) = local {
                self.spawn_job(job.clone(), async move { Ok(id) });
                return Ok(job);
            }
        }
        let plan = Plan {
            caller,
            candidates,
            platform,
            options,
            credentials,
        };
        let engine = self.clone();
        let running = job.clone();
        self.spawn_job(
            job.clone(),
            async move { engine.run_pull(&running, plan).await },
        );
        Ok(job)
    }

    async fn run_pull(&self, job: &Arc<Job>, plan: Plan) -> Result<String> {
        let cancel = job.cancelled();
        let mut last_unknown = None;
        for reference in &plan.candidates {
            job.update(|s| s.detail = format!("resolving {}", names::full_name(reference)));
            let client = Client::new(&self.connection(reference, &plan)?)?;
            if plan.options.policy == PullPolicy::Newer {
                let mut stop = cancel.clone();
                let current = tokio::select! {
                    current = self.up_to_date(&client, reference) => current,
                    _ = stop.wait_for(|c| *c) => return Err(RegistryError::Cancelled.into()),
                };
                if let Some(id) = current {
                    job.update(|s| s.bytes_total = Some(0));
                    return Ok(id);
                }
            }
            let mut stop = cancel.clone();
            let manifest = tokio::select! {
                manifest = client.manifest(reference, &plan.platform) => manifest,
                _ = stop.wait_for(|c| *c) => Err(RegistryError::Cancelled),
            };
            match manifest {
                Err(RegistryError::ManifestUnknown(text)) if plan.candidates.len() > 1 => {
                    last_unknown = Some(text);
                }
                Err(error) => return Err(error.into()),
                Ok(manifest) => {
                    return self
                        .fetch(job, &client, reference, manifest, &plan, cancel)
                        .await
                }
            }
        }
        Err(EngineError::NoSuchImage(
            last_unknown.unwrap_or_else(|| job.target.clone()),
        ))
    }

    /// `Policy` `newer`, as podman has it: the local image of that name, when the digest
    /// the registry names for the reference now (a `HEAD` request) is one of its
    /// `RepoDigests`. Without such an image, or when the registry does not answer or name a
    /// digest, None: the pull goes on (and reports the registry's failure, if any).
    async fn up_to_date(
        &self,
        client: &Client,
        reference: &oci_client::Reference,
    ) -> Option<String> {
        let local = self.lookup_image(&names::full_name(reference)).ok()?;
        let digest = match client.current_digest(reference).await {
            Ok(digest) => digest?,
            Err(error) => {
                tracing::debug!(%error, "checking for a newer image");
                return None;
            }
        };
        let repo_digest = format!(
            "{}/{}@{digest}",
            reference.registry(),
            reference.repository()
        );
        let image = self.image(&local).ok()?;
        image.repo_digests.contains(&repo_digest).then_some(local)
    }

    /// Credentials (the option, else the auth files) and TLS settings for the reference's
    /// registry.
    fn connection(&self, reference: &oci_client::Reference, plan: &Plan) -> Result<Connection> {
        let registry = reference.registry();
        let credentials = match &plan.credentials {
            Some(found) => Some(found.clone()),
            None => {
                let files = match &plan.options.auth_file {
                    Some(file) => vec![file.clone()],
                    None => auth::default_files(),
                };
                auth::lookup(&files, registry, reference.repository())?
            }
        };
        let cert_dir = plan
            .options
            .cert_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/containers/certs.d").join(registry));
        Ok(Connection {
            credentials,
            tls_verify: plan.options.tls_verify,
            extra_roots: read_cert_dir(&cert_dir)?,
        })
    }

    async fn fetch(
        &self,
        job: &Arc<Job>,
        client: &Client,
        reference: &oci_client::Reference,
        manifest: ImageManifest,
        plan: &Plan,
        cancel: watch::Receiver<bool>,
    ) -> Result<String> {
        let repository = format!("{}/{}", reference.registry(), reference.repository());
        let repo_digest = format!(
            "{repository}@{}",
            manifest.list_digest.as_ref().unwrap_or(&manifest.digest)
        );
        let mut new_names = Vec::new();
        if let Some(tag) = reference.tag() {
            new_names.push(format!("{repository}:{tag}"));
        }
        // The image id is the config's digest: an image already here needs no blob at all.
        let image_id = manifest
            .config
            .digest
            .trim_start_matches("sha256:")
            .to_string();
        let present = self.image(&image_id).ok().filter(|image| {
            image
                .layers
                .iter()
                .all(|layer| self.inner().layers.has(layer))
        });
        if let Some(image) = present {
            job.update(|s| s.bytes_total = Some(0));
            return self
                .record(plan.caller, image, new_names, repo_digest, job)
                .await;
        }
        job.update(|s| s.detail = format!("fetching config {}", manifest.config.digest));
        let mut stop = cancel.clone();
        let config = tokio::select! {
            config = client.config(reference, &manifest.config) => config?,
            _ = stop.wait_for(|c| *c) => return Err(RegistryError::Cancelled.into()),
        };
        let diff_ids = diff_ids_of(&config)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(EngineError::RegistryError(format!(
                "{}: the manifest has {} layers, its config {}",
                job.target,
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let fetched = self
            .fetch_missing_layers(job, client, reference, &manifest, &diff_ids, cancel)
            .await?;
        job.update(|s| s.detail = "storing".into());
        let record = self
            .commit_layers(&manifest, &diff_ids, config, &fetched, new_names.clone())
            .await?;
        drop(fetched);
        self.record(plan.caller, record, new_names, repo_digest, job)
            .await
    }

    /// Fetches the layers of `manifest` the store lacks — by the diff id its config names,
    /// or by blob digest — several at once, joining the downloads other pulls run. Sets the
    /// job's byte total and per-layer progress; the first failure (or a cancel) stops the
    /// others. The fetched layers, by index, are held until the image is committed.
    async fn fetch_missing_layers(
        &self,
        job: &Arc<Job>,
        client: &Client,
        reference: &oci_client::Reference,
        manifest: &ImageManifest,
        diff_ids: &[String],
        cancel: watch::Receiver<bool>,
    ) -> Result<Fetched> {
        let store = self.inner().layers.clone();
        let to_fetch = self.missing_layers(&store, manifest, diff_ids);
        show_layers(job, manifest, &to_fetch);
        // Set on the first failure (or a cancel), so the other layers stop too.
        let (abort, aborted) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(PARALLEL_LAYERS));
        let fetches = to_fetch.iter().map(|&index| {
            let layer = LayerFetch {
                job,
                index,
                expected: &diff_ids[index],
                source: Source {
                    client: client.clone(),
                    reference: reference.clone(),
                    blob: manifest.layers[index].clone(),
                    store: store.clone(),
                    limits: UnpackLimits::default(),
                },
                downloads: &self.inner().jobs.downloads,
                permits: &permits,
                cancel: &cancel,
                aborted: &aborted,
            };
            let abort = &abort;
            async move {
                let result = layer.fetch().await;
                if result.is_err() {
                    abort.send_replace(true);
                }
                result
            }
        });
        let results = futures_util::future::join_all(fetches).await;
        if *cancel.borrow() {
            return Err(RegistryError::Cancelled.into());
        }
        gather(results)
    }

    /// The indexes of the manifest's layers the store has neither by the diff id the
    /// (verified) config names nor by blob digest.
    fn missing_layers(
        &self,
        store: &LayerStore,
        manifest: &ImageManifest,
        diff_ids: &[String],
    ) -> Vec<usize> {
        let known: HashMap<String, String> = self
            .images()
            .iter()
            .flat_map(|image| {
                image
                    .blob_digests
                    .iter()
                    .cloned()
                    .zip(image.layers.iter().cloned())
            })
            .collect();
        let is_present = |index: usize, blob: &Blob| {
            store.has(&diff_ids[index])
                || known
                    .get(&blob.digest)
                    .is_some_and(|diff_id| *diff_id == diff_ids[index] && store.has(diff_id))
        };
        (0..manifest.layers.len())
            .filter(|&i| !is_present(i, &manifest.layers[i]))
            .collect()
    }

    /// Moves the fetched layers into the store and writes the image record, under the image
    /// lock; a layer that vanished from the store meanwhile fails the pull.
    async fn commit_layers(
        &self,
        manifest: &ImageManifest,
        diff_ids: &[String],
        config: Vec<u8>,
        fetched: &Fetched,
        new_names: Vec<String>,
    ) -> Result<crate::storage::images::ImageRecord> {
        let store = self.inner().layers.clone();
        let staged: Vec<Staged> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(index, blob)| match fetched.get(&index) {
                Some((_, unpacked)) => Staged {
                    blob_digest: blob.digest.clone(),
                    diff_id: unpacked.diff_id.clone(),
                    bytes: unpacked.bytes,
                    dir: unpacked.dir.clone(),
                },
                // Already in the store: `finish` does not move it.
                None => Staged {
                    blob_digest: blob.digest.clone(),
                    diff_id: diff_ids[index].clone(),
                    bytes: 0,
                    dir: store.path(&diff_ids[index]),
                },
            })
            .collect();
        let inner = self.inner().clone();
        let serial = inner.images_lock.lock().await;
        if let Some(missing) = staged
            .iter()
            .find(|s| !s.dir.exists() && !store.has(&s.diff_id))
        {
            return Err(EngineError::RegistryError(format!(
                "layer {} was removed from the store during the pull; pull again",
                missing.blob_digest
            )));
        }
        let record = blocking(move || {
            finish(&store, &config, staged, new_names)
                .map_err(|e| EngineError::RegistryError(format!("{e}")))
        })
        .await?;
        drop(serial);
        Ok(record)
    }

    /// Stores the pulled image (or gives an existing one the names and repo digest) with its
    /// `pull` event.
    async fn record(
        &self,
        caller: Caller,
        pulled: crate::storage::images::ImageRecord,
        new_names: Vec<String>,
        repo_digest: String,
        job: &Arc<Job>,
    ) -> Result<String> {
        let inner = self.inner().clone();
        let _serial = inner.images_lock.lock().await;
        let (mut image, added) = match inner.read_images().get(&pulled.id) {
            Some(existing) => (existing.clone(), None),
            None => (pulled.clone(), Some(pulled.id.clone())),
        };
        if !image.repo_digests.contains(&repo_digest) {
            image.repo_digests.push(repo_digest);
        }
        // A layer's blob digest learnt now (the image was imported before) is kept too.
        if image.blob_digests.len() != image.layers.len() && pulled.layers == image.layers {
            image.blob_digests = pulled.blob_digests.clone();
        }
        let losers = claim_names(&inner.read_images(), &mut image, &new_names);
        let event = image_event("pull", &image, caller, Some(&job.target));
        let mut changed = vec![image.clone()];
        changed.extend(losers);
        inner.store_images(changed, vec![event], added).await?;
        Ok(image.id)
    }
}

/// Sets the job's byte total and each layer's line: `waiting` for those to fetch, `present`
/// for the others.
fn show_layers(job: &Job, manifest: &ImageManifest, to_fetch: &[usize]) {
    let total: u64 = to_fetch.iter().map(|&i| manifest.layers[i].size).sum();
    job.update(|s| {
        s.bytes_total = Some(total);
        s.layers = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, blob)| LayerProgress {
                digest: blob.digest.clone(),
                status: if to_fetch.contains(&i) {
                    "waiting"
                } else {
                    "present"
                },
                done: 0,
                total: blob.size,
            })
            .collect();
        s.detail = format!(
            "fetching {} of {} layers",
            to_fetch.len(),
            manifest.layers.len()
        );
    });
}

/// One layer of a pull: its download claimed (or joined), followed and checked against the
/// diff id the config names.
struct LayerFetch<'a> {
    job: &'a Job,
    index: usize,
    expected: &'a str,
    source: Source,
    downloads: &'a Downloads,
    /// Bounds how many layers of the pull fetch at once.
    permits: &'a Semaphore,
    cancel: &'a watch::Receiver<bool>,
    /// Set when another layer of the pull failed.
    aborted: &'a watch::Receiver<bool>,
}

impl LayerFetch<'_> {
    /// The layer's download and what it unpacked, or `None` when the store has it already.
    async fn fetch(self) -> Result<(usize, Option<FetchedLayer>)> {
        let (job, index) = (self.job, self.index);
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if *self.aborted.borrow() {
            return Err(RegistryError::Cancelled.into());
        }
        let blob_digest = self.source.blob.digest.clone();
        let store = self.source.store.clone();
        let download = match self
            .downloads
            .claim(self.source, || store.has(self.expected))
        {
            Claim::Download(download) => download,
            Claim::Present => {
                job.update(|s| s.layers[index].status = "present");
                return Ok((index, None));
            }
        };
        let unpacked = match follow(job, index, &download, self.cancel, self.aborted).await {
            Ok(unpacked) if unpacked.diff_id == self.expected => unpacked,
            Ok(unpacked) => {
                let error = EngineError::RegistryError(format!(
                    "layer {blob_digest}: uncompressed digest {} is not the config's {}",
                    unpacked.diff_id, self.expected
                ));
                drop(unpacked);
                download.release().await;
                return Err(error);
            }
            Err(error) => {
                download.release().await;
                return Err(error);
            }
        };
        job.update(|s| s.layers[index].status = "done");
        Ok((index, Some((download, unpacked))))
    }
}

/// The layers fetched, by index; or the first failure, where a layer that stopped because
/// another failed ("cancelled") gives way to the cause.
fn gather(results: Vec<Result<(usize, Option<FetchedLayer>)>>) -> Result<Fetched> {
    let mut fetched = Fetched::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok((index, Some(layer))) => {
                fetched.insert(index, layer);
            }
            Ok((_, None)) => {}
            Err(error) => {
                let replace = match &first_error {
                    None => true,
                    Some(EngineError::Cancelled(_)) => !matches!(error, EngineError::Cancelled(_)),
                    Some(_) => false,
                };
                if replace {
                    first_error = Some(error);
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(fetched),
    }
}

/// Shows a layer's download in the job's progress until it is unpacked; the job's cancel,
/// or another of its layers failing, lets go of it (the download goes on while another
/// pull holds it).
async fn follow(
    job: &Job,
    index: usize,
    download: &Download,
    cancel: &watch::Receiver<bool>,
    aborted: &watch::Receiver<bool>,
) -> Result<Arc<Unpacked>> {
    let mut status = download.subscribe();
    let mut seen = 0u64;
    loop {
        let current = status.borrow_and_update().clone();
        match current {
            DownloadStatus::Downloading(done) => {
                let arrived = done.saturating_sub(seen);
                seen = done;
                job.update(|s| {
                    s.bytes_done += arrived;
                    s.layers[index].done += arrived;
                    s.layers[index].status = "downloading";
                });
            }
            DownloadStatus::Extracting => job.update(|s| s.layers[index].status = "extracting"),
            DownloadStatus::Done(unpacked) => return Ok(unpacked),
            DownloadStatus::Failed(error) => return Err(super::jobs::rebuild(&error)),
        }
        let (mut cancelled, mut stopped) = (cancel.clone(), aborted.clone());
        tokio::select! {
            changed = status.changed() => if changed.is_err() {
                return Err(EngineError::Internal("a layer download vanished".into()));
            },
            _ = cancelled.wait_for(|c| *c) => return Err(RegistryError::Cancelled.into()),
            _ = stopped.wait_for(|c| *c) => return Err(RegistryError::Cancelled.into()),
        }
    }
}

/// The config's `rootfs.diff_ids`.
fn diff_ids_of(config: &[u8]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let parsed: Config = serde_json::from_slice(config)
        .map_err(|e| EngineError::RegistryError(format!("image config: {e}")))?;
    Ok(parsed.rootfs.diff_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_podman_spells_them() {
        assert_eq!(PullPolicy::parse("missing"), Some(PullPolicy::Missing));
        assert_eq!(PullPolicy::parse("always"), Some(PullPolicy::Always));
        assert_eq!(PullPolicy::parse("newer"), Some(PullPolicy::Newer));
        assert_eq!(PullPolicy::parse("sometimes"), None);
    }

    #[test]
    fn options_never_print_the_credentials() {
        let options = PullOptions {
            credentials: Some("alice:s3cret".into()),
            ..Default::default()
        };
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn registry_errors_become_the_designed_engine_errors() {
        assert!(matches!(
            EngineError::from(RegistryError::Authentication("x".into())),
            EngineError::AuthenticationFailed(_)
        ));
        assert!(matches!(
            EngineError::from(RegistryError::ManifestUnknown("x".into())),
            EngineError::NoSuchImage(_)
        ));
        assert!(matches!(
            EngineError::from(RegistryError::Cancelled),
            EngineError::Cancelled(_)
        ));
        assert!(matches!(
            EngineError::from(RegistryError::Registry("x".into())),
            EngineError::RegistryError(_)
        ));
    }
}
