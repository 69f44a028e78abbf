//! The image store: layers unpacked once under `<root>/layers/<diff id>` and shared by every
//! image that has them, and the import of OCI archives (`oci-layout` + `index.json`),
//! docker-archives (`manifest.json`) and plain root-filesystem tars, streamed from a reader:
//! never the whole archive in memory, never a temporary copy of it. Digests are verified;
//! a failure leaves nothing behind.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::unpack::{unpack_layer, UnpackError, UnpackLimits};

/// The runtime configuration an image suggests (`Config` property).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    /// Paths the image declares as volumes (`Volumes`): each container gets an anonymous
    /// volume there.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// An image as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Hex sha256 of the config JSON (as docker and podman name images).
    pub id: String,
    pub names: Vec<String>,
    /// Diff ids, bottom layer first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
    pub architecture: String,
    pub os: String,
    /// Microseconds since the epoch (from the config's `created`, else the import time).
    pub created_at: u64,
    /// Bytes of uncompressed layers.
    pub size: u64,
    /// `name@sha256:…` of the manifests it was pulled by (none for an import).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The digest of each layer's blob as it travelled (compressed), beside `layers`: how a
    /// pull knows a layer is already here without fetching it.
    #[serde(default)]
    pub blob_digests: Vec<String>,
}

/// `ImportImage` options.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names the image (`localhost/app:1`).
    pub reference: Option<String>,
    /// For a plain rootfs tar, which has no config of its own.
    pub config: ImageConfig,
    pub limits: UnpackLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Unpack(#[from] UnpackError),
    #[error("archive: {0}")]
    Format(String),
    #[error("layer {name}: digest is {actual}, the manifest says {expected}")]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

fn format_error(message: impl Into<String>) -> ImportError {
    ImportError::Format(message.into())
}

/// Where layers live.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
}

impl LayerStore {
    pub fn new(dir: &Path) -> LayerStore {
        LayerStore {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory of a layer, by its diff id (`sha256:…`).
    pub fn path(&self, diff_id: &str) -> PathBuf {
        self.dir.join(diff_id.trim_start_matches("sha256:"))
    }

    pub fn has(&self, diff_id: &str) -> bool {
        self.path(diff_id).is_dir()
    }

    /// Deletes a layer no image uses any more: renamed away first, so a crash midway never
    /// leaves half a layer under its diff id for the next import to reuse.
    pub fn delete(&self, diff_id: &str) -> std::io::Result<()> {
        let trash = self
            .dir
            .join(format!(".trash-{}", diff_id.trim_start_matches("sha256:")));
        match std::fs::rename(self.path(diff_id), &trash) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
            Ok(()) => std::fs::remove_dir_all(&trash),
        }
    }

    /// At start-up: removes what a crash left (staging and trash directories) and layers no
    /// image refers to (moved in by an import whose record was never committed).
    pub fn sweep(&self, referenced: &std::collections::HashSet<String>) -> std::io::Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = name.starts_with(".import-") || name.starts_with(".trash-");
            let orphan = !name.starts_with('.') && !referenced.contains(&format!("sha256:{name}"));
            if leftover || orphan {
                tracing::info!(layer = %name, "removing a leftover from the layer store");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    pub(crate) fn staging(&self) -> std::io::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.dir)?;
        tempfile::Builder::new()
            .prefix(".import-")
            .tempdir_in(&self.dir)
    }
}

/// Hashes what it reads (a blob's digest is over its compressed bytes).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// A reader with its first bytes put back in front.
type Peeked<R> = std::io::Chain<Cursor<Vec<u8>>, R>;

/// Reads up to `n` bytes for sniffing; returns them and a reader that still yields them.
fn peek<R: Read>(mut reader: R, n: usize) -> std::io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = Vec::with_capacity(n);
    (&mut reader).take(n as u64).read_to_end(&mut head)?;
    Ok((head.clone(), Cursor::new(head).chain(reader)))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression_of(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A tar stream starts with a `ustar` header, or, for an empty layer, with the zero blocks
/// that end an archive.
fn is_tar(head: &[u8]) -> bool {
    head.len() >= 512 && (&head[257..262] == b"ustar" || head[..512].iter().all(|&b| b == 0))
}

/// A reader of the uncompressed bytes, whatever the compression.
pub(crate) fn decompressed<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>, ImportError> {
    let (head, reader) = peek(reader, 4)?;
    Ok(match compression_of(&head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdFrames::new(reader)?),
    })
}

/// A zstd stream of one or more frames (zstd:chunked and concatenated streams have many;
/// ruzstd's decoder reads one).
struct ZstdFrames<R: Read> {
    decoder:
        Option<ruzstd::decoding::StreamingDecoder<Pushback<R>, ruzstd::decoding::FrameDecoder>>,
}

/// A reader that can take back one byte (to look for a next frame).
struct Pushback<R> {
    inner: R,
    byte: Option<u8>,
}

impl<R: Read> Read for Pushback<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match (self.byte.take(), buffer.is_empty()) {
            (Some(byte), false) => {
                buffer[0] = byte;
                Ok(1)
            }
            (byte, _) => {
                self.byte = byte;
                self.inner.read(buffer)
            }
        }
    }
}

impl<R: Read> ZstdFrames<R> {
    fn new(reader: R) -> Result<ZstdFrames<R>, ImportError> {
        let source = Pushback {
            inner: reader,
            byte: None,
        };
        let decoder = ruzstd::decoding::StreamingDecoder::new(source)
            .map_err(|e| format_error(format!("zstd: {e}")))?;
        Ok(ZstdFrames {
            decoder: Some(decoder),
        })
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        while let Some(decoder) = self.decoder.as_mut() {
            let read = decoder.read(buffer)?;
            if read > 0 {
                return Ok(read);
            }
            // This frame is done: another one may follow.
            let Some(finished) = self.decoder.take() else {
                break;
            };
            let mut source = finished.into_inner();
            let mut byte = [0u8; 1];
            if source.read(&mut byte)? == 0 {
                break;
            }
            source.byte = Some(byte[0]);
            let next = ruzstd::decoding::StreamingDecoder::new(source)
                .map_err(|e| std::io::Error::other(format!("zstd: {e}")))?;
            self.decoder = Some(next);
        }
        Ok(0)
    }
}

/// Whether the first entry name says "image archive" rather than "root filesystem".
fn names_an_image_archive(name: &str) -> bool {
    let name = name.trim_start_matches("./");
    let hex_prefix = name.len() >= 64 && name[..64].bytes().all(|b| b.is_ascii_hexdigit());
    matches!(
        name,
        "oci-layout" | "index.json" | "manifest.json" | "repositories"
    ) || name.starts_with("blobs/")
        || hex_prefix
}

/// A layer unpacked into the staging area, waiting for the manifest to claim it.
#[derive(Clone)]
pub(crate) struct Staged {
    pub blob_digest: String,
    pub diff_id: String,
    pub bytes: u64,
    /// Where it was unpacked (a layer already in the store is not moved).
    pub dir: PathBuf,
}

/// `a/../b/./c` → `b/c` (names inside an archive; `..` above the top is dropped).
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Small JSON documents of the archive are kept (all of them together at most this large).
const MAX_METADATA: u64 = 16 << 20;

/// Imports an image from `reader`. `exists` tells whether an image id is already stored (its
/// layers are then only reused). Returns the record to store.
pub fn import(
    reader: impl Read,
    store: &LayerStore,
    options: &ImportOptions,
) -> Result<ImageRecord, ImportError> {
    let staging = store.staging()?;
    let stream = decompressed(reader)?;
    // Enough of the start to read past PAX or GNU long-name headers to the first real name.
    let (head, stream) = peek(stream, 64 << 10)?;
    if head.len() < 512 || !is_tar(&head) {
        return Err(format_error(
            "not a tar archive (nor a gzip or zstd compressed one)",
        ));
    }
    let first_name = tar::Archive::new(&head[..])
        .entries()
        .ok()
        .and_then(|mut entries| {
            entries
                .next()?
                .ok()?
                .path()
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let record = if names_an_image_archive(&first_name) {
        import_archive(stream, store, staging.path(), options)?
    } else {
        import_rootfs(stream, store, staging.path(), options)?
    };
    Ok(record)
}

fn import_rootfs(
    stream: impl Read,
    store: &LayerStore,
    staging: &Path,
    options: &ImportOptions,
) -> Result<ImageRecord, ImportError> {
    let dir = staging.join("rootfs");
    std::fs::create_dir(&dir)?;
    let unpacked = unpack_layer(stream, &dir, options.limits)?;
    let mut config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {
            "Cmd": options.config.cmd,
            "Entrypoint": options.config.entrypoint,
            "Env": options.config.env,
            "WorkingDir": options.config.working_dir,
            "User": options.config.user,
            "Labels": options.config.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [unpacked.diff_id] },
    });
    // Only when there are some: an image without volumes keeps the id it always had.
    if !options.config.volumes.is_empty() {
        let volumes: serde_json::Map<String, serde_json::Value> = options
            .config
            .volumes
            .iter()
            .map(|path| (path.clone(), serde_json::json!({})))
            .collect();
        config["config"]["Volumes"] = serde_json::Value::Object(volumes);
    }
    let config_bytes = serde_json::to_vec(&config).map_err(|e| format_error(e.to_string()))?;
    let staged = vec![Staged {
        blob_digest: unpacked.diff_id.clone(),
        diff_id: unpacked.diff_id,
        bytes: unpacked.bytes,
        dir,
    }];
    finish(
        store,
        &config_bytes,
        staged,
        options.reference.iter().cloned().collect(),
    )
}

fn import_archive(
    stream: impl Read,
    store: &LayerStore,
    staging: &Path,
    options: &ImportOptions,
) -> Result<ImageRecord, ImportError> {
    let mut archive = tar::Archive::new(stream);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut layers: HashMap<String, Staged> = HashMap::new();
    // Older docker-archives link a repeated layer to its first copy.
    let mut links: HashMap<String, String> = HashMap::new();
    let mut metadata_bytes = 0u64;
    let mut unpacked_bytes = 0u64;
    let entries = archive.entries().map_err(|e| format_error(e.to_string()))?;
    for (index, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| format_error(format!("truncated or corrupt: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format_error(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    let resolved = normalize(&base.join(target));
                    links.insert(name, resolved);
                }
                continue;
            }
            _ => continue,
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| format_error(e.to_string()))?;
        let mut hashing = Hashing {
            inner: entry,
            hasher: Sha256::new(),
        };
        let (head, content) = peek(&mut hashing, 512)?;
        let layer_like = compression_of(&head) != Compression::None || is_tar(&head);
        if layer_like {
            let dir = staging.join(index.to_string());
            std::fs::create_dir(&dir)?;
            // The size limit holds for the whole archive, not each layer alone.
            let mut limits = options.limits;
            limits.max_bytes = limits.max_bytes.saturating_sub(unpacked_bytes);
            let unpacked = unpack_layer(decompressed(content)?, &dir, limits)?;
            unpacked_bytes += unpacked.bytes;
            // Whatever the decompressor left unread still belongs to the blob's digest.
            std::io::copy(&mut hashing, &mut std::io::sink())?;
            let blob_digest = format!("sha256:{:x}", hashing.hasher.finalize());
            layers.insert(
                name,
                Staged {
                    blob_digest,
                    diff_id: unpacked.diff_id,
                    bytes: unpacked.bytes,
                    dir,
                },
            );
        } else {
            metadata_bytes += size;
            if size > MAX_METADATA || metadata_bytes > MAX_METADATA {
                return Err(format_error(format!(
                    "{name}: more than {MAX_METADATA} bytes of image metadata"
                )));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            let mut content = content;
            content
                .read_to_end(&mut bytes)
                .map_err(|e| format_error(format!("{name}: {e}")))?;
            if (bytes.len() as u64) < size {
                return Err(format_error(format!("{name}: truncated")));
            }
            files.insert(name, bytes);
        }
    }
    // A link to a layer is that layer.
    for (name, target) in links {
        if let Some(staged) = layers.get(&target).cloned() {
            layers.insert(name, staged);
        }
    }
    if files.contains_key("index.json") {
        resolve_oci(&files, layers, store, options)
    } else if files.contains_key("manifest.json") {
        resolve_docker(&files, layers, store, options)
    } else {
        Err(format_error(
            "no index.json (OCI layout) or manifest.json (docker-archive) in the archive",
        ))
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A blob of an OCI layout, checked against its digest.
fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> Result<&'a [u8], ImportError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format_error(format!("unsupported digest {digest}")))?;
    let bytes = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| format_error(format!("blob {digest} is missing")))?;
    let actual = format!("sha256:{:x}", Sha256::digest(bytes));
    if actual != digest {
        return Err(ImportError::DigestMismatch {
            name: digest.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

fn resolve_oci(
    files: &HashMap<String, Vec<u8>>,
    layers: HashMap<String, Staged>,
    store: &LayerStore,
    options: &ImportOptions,
) -> Result<ImageRecord, ImportError> {
    let index: OciIndex = serde_json::from_slice(&files["index.json"])
        .map_err(|e| format_error(format!("index.json: {e}")))?;
    let descriptor = index
        .manifests
        .first()
        .ok_or_else(|| format_error("index.json lists no manifest"))?;
    let manifest: OciManifest = serde_json::from_slice(blob(files, &descriptor.digest)?)
        .map_err(|e| format_error(format!("manifest {}: {e}", descriptor.digest)))?;
    let config = blob(files, &manifest.config.digest)?;
    let mut staged = Vec::new();
    for layer in &manifest.layers {
        let name = format!(
            "blobs/sha256/{}",
            layer.digest.trim_start_matches("sha256:")
        );
        let found = layers
            .get(&name)
            .cloned()
            .ok_or_else(|| format_error(format!("layer {} is missing", layer.digest)))?;
        if found.blob_digest != layer.digest {
            return Err(ImportError::DigestMismatch {
                name,
                expected: layer.digest.clone(),
                actual: found.blob_digest,
            });
        }
        staged.push(found);
    }
    // containerd's annotation carries the full name; the OCI one is often only a tag
    // (`latest`, from skopeo or docker), which names nothing by itself.
    let annotations = &descriptor.annotations;
    let full_name = annotations.get("io.containerd.image.name").or_else(|| {
        annotations
            .get("org.opencontainers.image.ref.name")
            .filter(|name| name.contains('/') || name.contains(':'))
    });
    let mut names: Vec<String> = full_name.map(|name| qualify(name)).into_iter().collect();
    // Docker 25+ writes both layouts; its manifest.json has the repository tags.
    if let Some(manifest) = files.get("manifest.json") {
        if let Ok(manifests) = serde_json::from_slice::<Vec<DockerManifest>>(manifest) {
            names.extend(
                manifests
                    .iter()
                    .flat_map(|m| m.repo_tags.clone().unwrap_or_default())
                    .map(|n| qualify(&n)),
            );
        }
    }
    names.extend(options.reference.iter().cloned());
    finish(store, config, staged, names)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn resolve_docker(
    files: &HashMap<String, Vec<u8>>,
    layers: HashMap<String, Staged>,
    store: &LayerStore,
    options: &ImportOptions,
) -> Result<ImageRecord, ImportError> {
    let manifests: Vec<DockerManifest> = serde_json::from_slice(&files["manifest.json"])
        .map_err(|e| format_error(format!("manifest.json: {e}")))?;
    let manifest = manifests
        .first()
        .ok_or_else(|| format_error("manifest.json lists no image"))?;
    let config = files
        .get(manifest.config.trim_start_matches("./"))
        .ok_or_else(|| format_error(format!("config {} is missing", manifest.config)))?;
    let mut staged = Vec::new();
    for name in &manifest.layers {
        let name = name.trim_start_matches("./");
        staged.push(
            layers
                .get(name)
                .cloned()
                .ok_or_else(|| format_error(format!("layer {name} is missing")))?,
        );
    }
    let mut names: Vec<String> = manifest
        .repo_tags
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|n| qualify(n))
        .collect();
    names.extend(options.reference.iter().cloned());
    finish(store, config, staged, names)
}

/// `busybox` → `docker.io/library/busybox:latest`, as podman names images; a name with a
/// registry (or `localhost/`) keeps it.
pub fn qualify(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or_default();
    let tagged = if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        tagged
    } else if name.contains('/') {
        format!("docker.io/{tagged}")
    } else {
        format!("docker.io/library/{tagged}")
    }
}

#[derive(Deserialize, Default)]
struct ConfigDocument {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RuntimeConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// Checks the layers against the config's diff ids, moves new layers into the store (layers
/// already there are reused) and builds the record.
pub(crate) fn finish(
    store: &LayerStore,
    config_bytes: &[u8],
    staged: Vec<Staged>,
    names: Vec<String>,
) -> Result<ImageRecord, ImportError> {
    let document: ConfigDocument = serde_json::from_slice(config_bytes)
        .map_err(|e| format_error(format!("image config: {e}")))?;
    let diff_ids: Vec<String> = staged.iter().map(|s| s.diff_id.clone()).collect();
    if document.rootfs.diff_ids != diff_ids {
        let (expected, actual) = document
            .rootfs
            .diff_ids
            .iter()
            .zip(&diff_ids)
            .find(|(a, b)| a != b)
            .map(|(a, b)| (a.clone(), b.clone()))
            .unwrap_or_else(|| {
                (
                    format!("{} layers", document.rootfs.diff_ids.len()),
                    format!("{} layers", diff_ids.len()),
                )
            });
        return Err(ImportError::DigestMismatch {
            name: "uncompressed layer".into(),
            expected,
            actual,
        });
    }
    let size = staged.iter().map(|s| s.bytes).sum();
    let blob_digests = staged.iter().map(|s| s.blob_digest.clone()).collect();
    for layer in staged {
        if !store.has(&layer.diff_id) {
            std::fs::rename(&layer.dir, store.path(&layer.diff_id))?;
        }
    }
    let runtime = document.config.unwrap_or_default();
    let mut unique_names: Vec<String> = Vec::new();
    for name in names {
        if !unique_names.contains(&name) {
            unique_names.push(name);
        }
    }
    Ok(ImageRecord {
        id: format!("{:x}", Sha256::digest(config_bytes)),
        names: unique_names,
        layers: diff_ids,
        config: ImageConfig {
            cmd: runtime.cmd.unwrap_or_default(),
            entrypoint: runtime.entrypoint.unwrap_or_default(),
            env: runtime.env.unwrap_or_default(),
            working_dir: runtime.working_dir.unwrap_or_default(),
            user: runtime.user.unwrap_or_default(),
            labels: runtime.labels.unwrap_or_default(),
            volumes: runtime
                .volumes
                .map(|volumes| volumes.into_keys().collect())
                .unwrap_or_default(),
        },
        architecture: document.architecture,
        os: document.os,
        created_at: document
            .created
            .as_deref()
            .and_then(crate::clock::parse_rfc3339_micros)
            .unwrap_or_else(crate::clock::now_micros),
        size,
        repo_digests: Vec::new(),
        blob_digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    fn add(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, bytes).unwrap();
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            add(&mut builder, name, bytes);
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Two layers: a base with bin/sh and a second adding etc/motd.
    fn layers() -> (Vec<u8>, Vec<u8>) {
        (
            tar_of(&[("bin/sh", b"shell")]),
            tar_of(&[("etc/motd", b"hello")]),
        )
    }

    fn config(diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
            "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/srv" },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap()
    }

    fn oci_archive(layer_blobs: &[Vec<u8>], config_bytes: &[u8]) -> Vec<u8> {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": { "digest": sha(config_bytes), "size": config_bytes.len() },
            "layers": layer_blobs.iter().map(|b| serde_json::json!({ "digest": sha(b), "size": b.len() })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "digest": sha(&manifest), "size": manifest.len(),
                            "annotations": { "org.opencontainers.image.ref.name": "localhost/demo:1" } }],
        }))
        .unwrap();
        let blob_name = |b: &[u8]| format!("blobs/sha256/{}", &sha(b)[7..]);
        let mut files: Vec<(String, Vec<u8>)> = vec![(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )];
        for blob in layer_blobs
            .iter()
            .chain([&config_bytes.to_vec(), &manifest])
        {
            files.push((blob_name(blob), blob.clone()));
        }
        files.push(("index.json".into(), index));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        tar_of(&refs)
    }

    fn docker_archive(layer_tars: &[Vec<u8>], config_bytes: &[u8]) -> Vec<u8> {
        let names: Vec<String> = layer_tars
            .iter()
            .map(|l| format!("{}/layer.tar", &sha(l)[7..]))
            .collect();
        let config_name = format!("{}.json", &sha(config_bytes)[7..]);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": ["demo:1"], "Layers": names,
        }]))
        .unwrap();
        let mut files: Vec<(String, Vec<u8>)> = vec![(config_name, config_bytes.to_vec())];
        for (name, layer) in names.iter().zip(layer_tars) {
            files.push((name.clone(), layer.clone()));
        }
        files.push(("manifest.json".into(), manifest));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        tar_of(&refs)
    }

    fn store() -> (tempfile::TempDir, LayerStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::new(&dir.path().join("layers"));
        (dir, store)
    }

    fn leftovers(store: &LayerStore) -> Vec<String> {
        std::fs::read_dir(&store.dir)
            .map(|e| {
                e.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn an_oci_archive_imports_with_its_config_and_names() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let diff_ids = [sha(&base), sha(&top)];
        let archive = oci_archive(&[gzip(&base), gzip(&top)], &config(&diff_ids));
        let image = import(&archive[..], &store, &ImportOptions::default()).unwrap();
        assert_eq!(image.layers, diff_ids);
        assert_eq!(image.names, ["localhost/demo:1"]);
        assert_eq!(image.config.cmd, ["/bin/sh"]);
        assert_eq!(image.config.working_dir, "/srv");
        assert_eq!(
            std::fs::read(store.path(&diff_ids[1]).join("etc/motd")).unwrap(),
            b"hello"
        );
        assert_eq!(
            leftovers(&store).len(),
            2,
            "staging left behind: {:?}",
            leftovers(&store)
        );
    }

    #[test]
    fn a_docker_archive_of_the_same_image_reuses_the_layers() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let diff_ids = [sha(&base), sha(&top)];
        let oci = import(
            &oci_archive(&[gzip(&base), gzip(&top)], &config(&diff_ids))[..],
            &store,
            &ImportOptions::default(),
        )
        .unwrap();
        let inode =
            |path: PathBuf| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
        let before = inode(store.path(&diff_ids[0]).join("bin/sh"));
        let docker = import(
            &docker_archive(&[base, top], &config(&diff_ids))[..],
            &store,
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(docker.id, oci.id, "same config, same image id");
        assert_eq!(docker.names, ["docker.io/library/demo:1"]);
        assert_eq!(
            inode(store.path(&diff_ids[0]).join("bin/sh")),
            before,
            "the layer was unpacked again"
        );
        assert_eq!(leftovers(&store).len(), 2);
    }

    #[test]
    fn a_plain_rootfs_tar_becomes_a_one_layer_image_with_the_given_config() {
        let (_dir, store) = store();
        let rootfs = gzip(&tar_of(&[
            ("bin/busybox", b"bb"),
            ("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
        ]));
        let options = ImportOptions {
            reference: Some("localhost/plain:1".into()),
            config: ImageConfig {
                cmd: vec!["/bin/sh".into()],
                volumes: vec!["/data".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let image = import(&rootfs[..], &store, &options).unwrap();
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.names, ["localhost/plain:1"]);
        assert_eq!(image.config.cmd, ["/bin/sh"]);
        assert_eq!(image.config.volumes, ["/data"], "declared volumes are kept");
        assert!(store.path(&image.layers[0]).join("bin/busybox").exists());
    }

    #[test]
    fn a_layer_whose_digest_does_not_match_fails_and_leaves_nothing() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let diff_ids = [sha(&base), sha(&top)];
        let mut archive = oci_archive(&[gzip(&base), gzip(&top)], &config(&diff_ids));
        // Swap one byte of the file name of the first layer's blob: its content no longer
        // matches its name.
        let blob = format!("blobs/sha256/{}", &sha(&gzip(&base))[7..]);
        let at = archive
            .windows(blob.len())
            .position(|w| w == blob.as_bytes())
            .unwrap();
        let tampered_name = format!("blobs/sha256/{}", &sha(&gzip(&top))[7..]);
        archive[at..at + blob.len()].copy_from_slice(tampered_name.as_bytes());
        let mut header = tar::Header::new_old();
        header
            .as_mut_bytes()
            .copy_from_slice(&archive[at..at + 512]);
        header.set_cksum();
        archive[at..at + 512].copy_from_slice(header.as_bytes());
        let error = import(&archive[..], &store, &ImportOptions::default()).unwrap_err();
        assert!(
            matches!(
                error,
                ImportError::DigestMismatch { .. } | ImportError::Format(_)
            ),
            "{error}"
        );
        assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    }

    #[test]
    fn diff_ids_that_do_not_match_the_config_fail() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let archive = docker_archive(&[base.clone(), top], &config(&[sha(&base), sha(b"other")]));
        let error = import(&archive[..], &store, &ImportOptions::default()).unwrap_err();
        assert!(
            matches!(error, ImportError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn a_truncated_archive_fails_and_leaves_nothing() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let archive = docker_archive(
            &[base.clone(), top.clone()],
            &config(&[sha(&base), sha(&top)]),
        );
        let error = import(
            &archive[..archive.len() / 2],
            &store,
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(error, ImportError::Format(_) | ImportError::Unpack(_)),
            "{error}"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn zstd_layers_and_a_zstd_archive_import() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let zstd = |bytes: &[u8]| {
            ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
        };
        let diff_ids = [sha(&base), sha(&top)];
        let archive = oci_archive(&[zstd(&base), zstd(&top)], &config(&diff_ids));
        let image = import(&zstd(&archive)[..], &store, &ImportOptions::default()).unwrap();
        assert_eq!(image.layers, diff_ids);
        assert_eq!(
            std::fs::read(store.path(&diff_ids[0]).join("bin/sh")).unwrap(),
            b"shell"
        );

        // A layer of two concatenated frames (as zstd:chunked writes them).
        let (_dir, store) = super::tests::store();
        let half = base.len() / 2;
        let mut framed = zstd(&base[..half]);
        framed.extend(zstd(&base[half..]));
        let diff_ids = [sha(&base)];
        let archive = oci_archive(&[framed], &config(&diff_ids));
        let image = import(&archive[..], &store, &ImportOptions::default()).unwrap();
        assert_eq!(image.layers, diff_ids);
    }

    #[test]
    fn a_layer_listed_twice_and_a_linked_layer_import() {
        let (_dir, store) = store();
        let (base, _) = layers();
        let diff_ids = [sha(&base), sha(&base)];
        let archive = oci_archive(&[gzip(&base), gzip(&base)], &config(&diff_ids));
        let image = import(&archive[..], &store, &ImportOptions::default()).unwrap();
        assert_eq!(image.layers, diff_ids);

        // An older docker-archive: the second layer is a symlink to the first copy.
        let config_bytes = config(&diff_ids);
        let config_name = format!("{}.json", &sha(&config_bytes)[7..]);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": ["twice:1"], "Layers": ["a/layer.tar", "b/layer.tar"],
        }]))
        .unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        add(&mut builder, &config_name, &config_bytes);
        add(&mut builder, "a/layer.tar", &base);
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        link.set_uid(0);
        link.set_gid(0);
        link.set_mtime(0);
        builder
            .append_link(&mut link, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        add(&mut builder, "manifest.json", &manifest);
        let image = import(
            &builder.into_inner().unwrap()[..],
            &store,
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(image.layers, diff_ids);
    }

    #[test]
    fn an_archive_starting_with_a_long_name_is_still_recognised() {
        let (_dir, store) = store();
        let (base, top) = layers();
        let diff_ids = [sha(&base), sha(&top)];
        let mut archive = tar::Builder::new(Vec::new());
        // A first entry whose name needs a GNU long-name header: an image archive still.
        let long = format!("{}/layer.tar", "0".repeat(64).repeat(2));
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        archive.append_data(&mut header, &long, &b""[..]).unwrap();
        let inner = docker_archive(&[base, top], &config(&diff_ids));
        for entry in tar::Archive::new(&inner[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut header = entry.header().clone();
            let path = entry.path().unwrap().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            archive.append_data(&mut header, path, &data[..]).unwrap();
        }
        let image = import(
            &archive.into_inner().unwrap()[..],
            &store,
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(image.layers, diff_ids);
    }

    #[test]
    fn names_are_qualified_as_podman_does() {
        assert_eq!(qualify("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(qualify("me/app:2"), "docker.io/me/app:2");
        assert_eq!(qualify("localhost/app"), "localhost/app:latest");
        assert_eq!(qualify("quay.io/x/y:1"), "quay.io/x/y:1");
    }
}
