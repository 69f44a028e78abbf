//! The transfer: manifests (an index or manifest list resolved to one platform; OCI and
//! Docker schema 2), the config blob, and layer blobs streamed to a file while their size is
//! held to the descriptor's and their digest checked. Built on `oci-client` (rustls): its
//! auth and blob requests; manifests are requested here, on the same `reqwest`, so that a
//! manifest's body is read with a bound (oci-client reads a whole body before any check).

use std::path::Path;

use futures_util::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{Connection, Platform, RegistryError};

/// A manifest larger than this is refused (containers/image has the same bound).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// An image config larger than this is refused.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// A blob named by a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The image manifest chosen for a platform.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    /// The digest of the image manifest itself.
    pub digest: String,
    /// The digest of the index or manifest list the reference named, if it named one.
    pub list_digest: Option<String>,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Blob>,
    layers: Option<Vec<Blob>>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    architecture: String,
    os: String,
    variant: Option<String>,
}

/// A registry client for one pull (one repository).
#[derive(Clone)]
pub struct Client {
    inner: oci_client::Client,
    /// For manifest requests: same TLS settings as `inner`'s.
    http: reqwest::Client,
    auth: RegistryAuth,
    /// The bearer token oci-client's auth got for the repository (None: basic or anonymous).
    token: std::sync::Arc<tokio::sync::OnceCell<Option<String>>>,
}

/// The error's sources too: reqwest's own text leaves out "connection refused".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sorts an `oci-client` error into what the caller can tell apart; `what` names the object
/// (a reference or a digest).
fn classify(what: &str, error: OciDistributionError) -> RegistryError {
    match error {
        OciDistributionError::AuthenticationFailure(message) => {
            RegistryError::Authentication(format!("{what}: authentication failed: {message}"))
        }
        OciDistributionError::UnauthorizedError { .. } => RegistryError::Authentication(format!(
            "{what}: the registry refused the credentials (401 Unauthorized)"
        )),
        OciDistributionError::ImageManifestNotFoundError(message) => {
            RegistryError::ManifestUnknown(format!("{what}: {message}"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let message = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let text = format!("{what}: {message}");
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::ManifestUnknown(text)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Authentication(text)
            } else {
                RegistryError::Registry(text)
            }
        }
        OciDistributionError::ServerError { code, message, .. } => RegistryError::Registry(
            format!("{what}: the registry answered {code}: {}", message.trim()),
        ),
        other => RegistryError::Registry(format!("{what}: {}", chain(&other))),
    }
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, RegistryError> {
        let config = oci_client::client::ClientConfig {
            accept_invalid_certificates: !connection.tls_verify,
            extra_root_certificates: connection
                .extra_roots
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        };
        let tls_error = |e: &dyn std::error::Error| {
            RegistryError::InvalidArgument(format!("tls setup: {}", chain(e)))
        };
        let mut roots = Vec::new();
        for pem in &connection.extra_roots {
            roots.push(reqwest::Certificate::from_pem(pem).map_err(|e| tls_error(&e))?);
        }
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!connection.tls_verify)
            .tls_certs_merge(roots)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| tls_error(&e))?;
        let inner = oci_client::Client::try_from(config).map_err(|e| tls_error(&e))?;
        let auth = match &connection.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Client {
            inner,
            http,
            auth,
            token: Default::default(),
        })
    }

    /// A manifest request (`GET`, or `HEAD` for the digest alone) with the repository's
    /// credentials; a status other than success is the error it means.
    async fn manifest_request(
        &self,
        method: reqwest::Method,
        reference: &Reference,
    ) -> Result<reqwest::Response, RegistryError> {
        let what = reference.whole();
        let token = self
            .token
            .get_or_try_init(|| async {
                self.inner
                    .auth(reference, &self.auth, RegistryOperation::Pull)
                    .await
                    .map_err(|e| classify(&what, e))
            })
            .await?;
        let mut request = self
            .http
            .request(method, manifest_url(reference))
            .header(reqwest::header::ACCEPT, ACCEPTED.join(", "));
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Registry(format!("{what}: {}", chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_bounded(&what, response, 64 << 10)
            .await
            .unwrap_or_default();
        let message = registry_message(&body);
        Err(match status.as_u16() {
            401 | 403 => RegistryError::Authentication(format!(
                "{what}: the registry refused the credentials ({status}){message}"
            )),
            404 => RegistryError::ManifestUnknown(format!("{what}: {status}{message}")),
            _ => {
                RegistryError::Registry(format!("{what}: the registry answered {status}{message}"))
            }
        })
    }

    /// The digest the registry names for `reference` now, from a `HEAD` request (no manifest
    /// travels); None when the registry does not say (`Docker-Content-Digest`).
    pub async fn current_digest(
        &self,
        reference: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let response = self
            .manifest_request(reqwest::Method::HEAD, reference)
            .await?;
        Ok(content_digest(&response))
    }

    /// One manifest document. Its body is read with a bound: one over [`MAX_MANIFEST_BYTES`]
    /// is refused by its `Content-Length`, or once that many bytes have arrived — never
    /// buffered whole.
    async fn document(&self, reference: &Reference) -> Result<(Document, String), RegistryError> {
        let what = reference.whole();
        let response = self
            .manifest_request(reqwest::Method::GET, reference)
            .await?;
        let named = content_digest(&response);
        let body = read_bounded(&what, response, MAX_MANIFEST_BYTES).await?;
        let digest = format!("sha256:{}", hex(&Sha256::digest(&body)));
        let expected = [reference.digest().map(String::from), named];
        if let Some(other) = expected
            .iter()
            .flatten()
            .find(|d| d.starts_with("sha256:") && **d != digest)
        {
            return Err(RegistryError::Registry(format!(
                "{what}: the manifest's digest is {digest}, not {other}"
            )));
        }
        let document: Document = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Registry(format!("{what}: manifest: {e}")))?;
        if document.schema_version != Some(2) {
            return Err(RegistryError::Registry(format!(
                "{what}: manifest schema version {:?} is not supported (only 2)",
                document.schema_version
            )));
        }
        Ok((document, digest))
    }

    /// The image manifest for `platform`: an index or manifest list is resolved to the
    /// entry of that platform.
    pub async fn manifest(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ImageManifest, RegistryError> {
        let (document, digest) = self.document(reference).await?;
        let is_index = document.manifests.is_some()
            || matches!(
                document.media_type.as_deref(),
                Some(OCI_INDEX | DOCKER_LIST)
            );
        if !is_index {
            return image_manifest(&reference.whole(), document, digest, None);
        }
        let entries = document.manifests.unwrap_or_default();
        let entry = choose(&entries, platform).ok_or_else(|| {
            RegistryError::ManifestUnknown(format!(
                "{}: no image for platform {platform} in its index",
                reference.whole()
            ))
        })?;
        if entry.size > MAX_MANIFEST_BYTES as u64 {
            return Err(RegistryError::InvalidArgument(format!(
                "{}: the manifest {} is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                reference.whole(),
                entry.digest,
                entry.size
            )));
        }
        let chosen = reference.clone_with_digest(entry.digest.clone());
        let (document, chosen_digest) = self.document(&chosen).await?;
        image_manifest(&chosen.whole(), document, chosen_digest, Some(digest))
    }

    /// The config blob (small; kept in memory, bounded, digest checked).
    pub async fn config(
        &self,
        reference: &Reference,
        blob: &Blob,
    ) -> Result<Vec<u8>, RegistryError> {
        if blob.size > MAX_CONFIG_BYTES {
            return Err(RegistryError::InvalidArgument(format!(
                "config {}: {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                blob.digest, blob.size
            )));
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        let (_cancel, never) = watch::channel(false);
        self.stream(reference, blob, &never, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(bytes)
    }

    /// Streams a blob into `file` (created), calling `progress` with each chunk's length.
    pub async fn download(
        &self,
        reference: &Reference,
        blob: &Blob,
        file: &Path,
        cancel: &watch::Receiver<bool>,
        mut progress: impl FnMut(u64),
    ) -> Result<(), RegistryError> {
        let local = |source: std::io::Error| RegistryError::Local {
            what: file.display().to_string(),
            source,
        };
        let mut out = tokio::io::BufWriter::with_capacity(
            256 << 10,
            tokio::fs::File::create(file).await.map_err(local)?,
        );
        let mut stream = self.open(reference, blob).await?;
        while let Some(chunk) = stream.next(cancel).await? {
            out.write_all(&chunk).await.map_err(local)?;
            progress(chunk.len() as u64);
        }
        out.flush().await.map_err(local)
    }

    /// Starts fetching `blob`; a registry that announces more bytes than its descriptor says is
    /// refused before any arrives.
    async fn open<'a>(
        &self,
        reference: &Reference,
        blob: &'a Blob,
    ) -> Result<BlobStream<'a>, RegistryError> {
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            ..Default::default()
        };
        self.inner
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        let stream = self
            .inner
            .pull_blob_stream(reference, &descriptor)
            .await
            .map_err(|e| match classify(&format!("blob {}", blob.digest), e) {
                // A blob the manifest names but the registry lacks is the registry's fault.
                RegistryError::ManifestUnknown(text) => RegistryError::Registry(text),
                other => other,
            })?;
        if stream
            .content_length
            .is_some_and(|length| length > blob.size)
        {
            return Err(larger(blob));
        }
        Ok(BlobStream {
            blob,
            stream,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    async fn stream(
        &self,
        reference: &Reference,
        blob: &Blob,
        cancel: &watch::Receiver<bool>,
        mut sink: impl FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        let mut stream = self.open(reference, blob).await?;
        while let Some(chunk) = stream.next(cancel).await? {
            sink(&chunk)?;
        }
        Ok(())
    }
}

/// `https://<registry>/v2/<repository>/manifests/<digest or tag>`, as oci-client spells it.
fn manifest_url(reference: &Reference) -> String {
    let name = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!(
        "https://{}/v2/{}/manifests/{name}",
        reference.resolve_registry(),
        reference.repository()
    )
}

/// The `Docker-Content-Digest` header.
fn content_digest(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
}

/// A response body of at most `limit` bytes: refused by its `Content-Length`, else as soon
/// as more than `limit` arrived (the rest is never read).
async fn read_bounded(
    what: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || {
        RegistryError::InvalidArgument(format!(
            "{what}: the manifest is larger than the {limit} bytes allowed"
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RegistryError::Registry(format!("{what}: {}", chain(&e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `: CODE: message; …` from a registry's error envelope, or "" when it sent none.
fn registry_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) if !envelope.errors.is_empty() => {
            let entries: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!(": {}", entries.join("; "))
        }
        _ => String::new(),
    }
}

/// A blob arriving: every chunk counted against the size its descriptor says and hashed,
/// the whole checked against its digest at the end.
struct BlobStream<'a> {
    blob: &'a Blob,
    stream: oci_client::client::SizedStream,
    hasher: Sha256,
    written: u64,
}

impl BlobStream<'_> {
    /// The next chunk, or `None` once the whole blob arrived and was verified; stops once
    /// `cancel` is set.
    async fn next(
        &mut self,
        cancel: &watch::Receiver<bool>,
    ) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>, RegistryError> {
        let mut cancelled = cancel.clone();
        let next = tokio::select! {
            next = self.stream.next() => next,
            _ = cancelled.wait_for(|c| *c) => return Err(RegistryError::Cancelled),
        };
        // Also between chunks that are ready at once (the select above may never wait).
        if *cancel.borrow() {
            return Err(RegistryError::Cancelled);
        }
        let Some(chunk) = next else {
            verify(self.blob, self.written, &self.hasher.finalize_reset())?;
            return Ok(None);
        };
        let chunk = chunk.map_err(|e| {
            RegistryError::Registry(format!("blob {}: {}", self.blob.digest, chain(&e)))
        })?;
        self.written += chunk.len() as u64;
        if self.written > self.blob.size {
            return Err(larger(self.blob));
        }
        self.hasher.update(&chunk);
        Ok(Some(chunk))
    }
}

fn larger(blob: &Blob) -> RegistryError {
    RegistryError::InvalidArgument(format!(
        "blob {} is larger than the {} bytes its descriptor says",
        blob.digest, blob.size
    ))
}

/// The whole blob arrived and is what its digest says.
fn verify(blob: &Blob, written: u64, hash: &[u8]) -> Result<(), RegistryError> {
    if written != blob.size {
        return Err(RegistryError::Registry(format!(
            "blob {}: {written} bytes arrived, its descriptor says {}",
            blob.digest, blob.size
        )));
    }
    let actual = format!("sha256:{}", hex(hash));
    if blob.digest.starts_with("sha256:") && actual != blob.digest {
        return Err(RegistryError::Registry(format!(
            "blob {}: its content has digest {actual}",
            blob.digest
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn image_manifest(
    what: &str,
    document: Document,
    digest: String,
    list_digest: Option<String>,
) -> Result<ImageManifest, RegistryError> {
    let config = document
        .config
        .ok_or_else(|| RegistryError::Registry(format!("{what}: the manifest has no config")))?;
    Ok(ImageManifest {
        digest,
        list_digest,
        config,
        layers: document.layers.unwrap_or_default(),
    })
}

/// The entry for `platform`: os and architecture must match; a variant too when one is
/// asked for (else the first entry of that architecture, as containers/image does).
fn choose<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    entries.iter().find(|entry| {
        entry.platform.as_ref().is_some_and(|p| {
            p.os == platform.os
                && p.architecture == platform.architecture
                && platform
                    .variant
                    .as_ref()
                    .is_none_or(|variant| p.variant.as_ref() == Some(variant))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, os: &str, architecture: &str, variant: Option<&str>) -> IndexEntry {
        IndexEntry {
            digest: digest.into(),
            size: 10,
            platform: Some(EntryPlatform {
                architecture: architecture.into(),
                os: os.into(),
                variant: variant.map(String::from),
            }),
        }
    }

    #[test]
    fn the_platform_entry_is_chosen_by_os_arch_and_variant() {
        let entries = [
            entry("a", "linux", "arm64", Some("v8")),
            entry("b", "linux", "amd64", None),
            entry("c", "linux", "arm", Some("v6")),
            entry("d", "linux", "arm", Some("v7")),
        ];
        let pick = |text: &str| {
            choose(&entries, &Platform::parse(text).unwrap()).map(|e| e.digest.as_str())
        };
        assert_eq!(pick("linux/amd64"), Some("b"));
        assert_eq!(pick("linux/arm64"), Some("a"));
        assert_eq!(pick("linux/arm/v7"), Some("d"));
        assert_eq!(pick("linux/arm"), Some("c"));
        assert_eq!(pick("windows/amd64"), None);
    }

    #[test]
    fn manifest_urls_name_the_digest_else_the_tag() {
        let url = |text: &str| manifest_url(&text.parse().unwrap());
        assert_eq!(
            url("127.0.0.1:5000/app:1"),
            "https://127.0.0.1:5000/v2/app/manifests/1"
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            url(&format!("127.0.0.1:5000/team/app@{digest}")),
            format!("https://127.0.0.1:5000/v2/team/app/manifests/{digest}")
        );
        assert_eq!(
            url("docker.io/library/alpine"),
            "https://index.docker.io/v2/library/alpine/manifests/latest"
        );
    }

    #[test]
    fn registry_error_envelopes_become_text() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            registry_message(body),
            ": MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(registry_message(b"<html>not found</html>"), "");
    }

    #[test]
    fn a_blob_is_checked_for_size_and_digest() {
        let content = b"layer";
        let digest = format!("sha256:{}", hex(&Sha256::digest(content)));
        let blob = Blob {
            media_type: String::new(),
            digest: digest.clone(),
            size: 5,
        };
        assert!(verify(&blob, 5, &Sha256::digest(content)).is_ok());
        let error = verify(&blob, 5, &Sha256::digest(b"other")).unwrap_err();
        assert!(error.to_string().contains(&digest), "{error}");
        assert!(verify(&blob, 4, &Sha256::digest(content)).is_err());
    }
}
