//! Registry pulls end to end: Debian's `docker-registry` on 127.0.0.1 with TLS from a test CA
//! and an htpasswd user, images pushed into it with `skopeo` from OCI layouts this test
//! builds, pulled through berthd's `PullImage` and followed through the Job object.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth::cli::proxy::{ImageProxy, JobProxy, ManagerProxy};
use common::{error_name, harness, wait_until, Harness};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use zbus::Variant;

const USER: &str = "tester";
const PASSWORD: &str = "pull-test-secret";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A registry on 127.0.0.1 serving TLS with a leaf signed by a test CA, behind htpasswd.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=berth test CA"])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.crt")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d.join("leaf.key"))
            .arg("-out")
            .arg(d.join("leaf.csr")));
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
            .arg("-in")
            .arg(d.join("leaf.csr"))
            .arg("-CA")
            .arg(d.join("ca.crt"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(d.join("ext"))
            .arg("-out")
            .arg(d.join("leaf.crt")));
        std::fs::create_dir(d.join("certs")).unwrap();
        std::fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap();
        assert!(htpasswd.status.success());
        std::fs::write(d.join("htpasswd"), htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {dir}/leaf.crt\n    key: {dir}/leaf.key\n\
             auth:\n  htpasswd:\n    realm: berth-test\n    path: {dir}/htpasswd\n",
            root = d.join("storage").display(),
            dir = d.display(),
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Registry { child, dir, port }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Pushes an OCI layout's tagged image (`--all`: an index with every platform); returns
    /// the digest of what was pushed (the manifest, or the index).
    fn push(&self, layout: &Path, tag: &str, name: &str) -> String {
        let digest_file = self.dir.path().join("pushed-digest");
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--preserve-digests"])
            .arg("--dest-cert-dir")
            .arg(self.cert_dir())
            .args(["--dest-creds", &format!("{USER}:{PASSWORD}")])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.host())));
        std::fs::read_to_string(digest_file)
            .unwrap()
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob was fetched (GET requests in the access log).
    fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .count()
    }

    /// How many `method` requests for `path` (`/v2/…`) the access log has.
    fn requests(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// The file a blob is stored in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A tar of the given files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}

/// One image of a layout: its layers (uncompressed tars; stored gzip unless `raw`).
struct ImageSpec {
    layers: Vec<Vec<u8>>,
    architecture: &'static str,
    raw: bool,
}

/// Writes blobs; returns the manifest's (digest, size, bytes).
fn write_image(layout: &Path, image: &ImageSpec) -> (String, usize, Vec<String>) {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha(bytes);
        std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        digest
    };
    let mut layer_descriptors = Vec::new();
    let mut layer_digests = Vec::new();
    for layer in &image.layers {
        let (blob, media_type) = if image.raw {
            (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
        } else {
            (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip")
        };
        let digest = put(&blob);
        layer_digests.push(digest.clone());
        layer_descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": blob.len()
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": image.architecture, "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/usr/bin"] },
        "rootfs": { "type": "layers", "diff_ids": image.layers.iter().map(|l| sha(l)).collect::<Vec<_>>() },
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": layer_descriptors,
    }))
    .unwrap();
    let digest = put(&manifest);
    (digest, manifest.len(), layer_digests)
}

/// An OCI layout with one image tagged `tag`; returns the layer blob digests.
fn layout_of(dir: &Path, tag: &str, image: &ImageSpec) -> Vec<String> {
    let (digest, size, layers) = write_image(dir, image);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({ "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "annotations": { "org.opencontainers.image.ref.name": tag } }] })
        .to_string(),
    )
    .unwrap();
    layers
}

/// The busybox tree of the harness as a layer.
fn busybox_layer(h: &Harness) -> Vec<u8> {
    std::fs::read(h.rootfs_tar()).unwrap()
}

fn pull_options(
    registry: &Registry,
    extra: &[(&'static str, Variant<'static>)],
) -> HashMap<&'static str, Variant<'static>> {
    let mut options: HashMap<&'static str, Variant<'static>> = HashMap::from([
        ("Credentials", Variant::from(format!("{USER}:{PASSWORD}"))),
        (
            "CertDir",
            Variant::from(registry.cert_dir().display().to_string()),
        ),
    ]);
    for (key, value) in extra {
        options.insert(key, value.try_clone().unwrap());
    }
    options
}

async fn job_proxy<'a>(connection: &zbus::Connection, path: zbus::OwnedObjectPath) -> JobProxy<'a> {
    JobProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// Starts a pull and returns its job.
async fn start_pull<'a>(
    connection: &zbus::Connection,
    reference: &str,
    options: HashMap<&'static str, Variant<'static>>,
) -> zbus::Result<JobProxy<'a>> {
    let manager = ManagerProxy::new(connection).await.unwrap();
    let path = manager.pull_image(reference, options).await?;
    Ok(job_proxy(connection, path).await)
}

/// What the layer store holds: layer names and leftovers.
fn layer_store(h: &Harness) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(h.root().join("layers"))
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn image_ids(connection: &zbus::Connection) -> Vec<String> {
    let manager = ManagerProxy::new(connection).await.unwrap();
    let mut ids: Vec<String> = manager
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.0)
        .collect();
    ids.sort();
    ids
}

/// Two images sharing the busybox base: `app:1` adds /hello, `other:1` adds /other.
fn two_images(h: &Harness, registry: &Registry) -> (String, Vec<String>, Vec<String>) {
    let base = busybox_layer(h);
    let app = h.dir.path().join("app-layout");
    let app_layers = layout_of(
        &app,
        "1",
        &ImageSpec {
            layers: vec![
                base.clone(),
                tar_of(&[("hello", b"hello from the registry\n")]),
            ],
            architecture: "amd64",
            raw: false,
        },
    );
    let digest = registry.push(&app, "1", "app:1");
    let other = h.dir.path().join("other-layout");
    let other_layers = layout_of(
        &other,
        "1",
        &ImageSpec {
            layers: vec![base, tar_of(&[("other", b"other\n")])],
            architecture: "amd64",
            raw: false,
        },
    );
    registry.push(&other, "1", "other:1");
    (digest, app_layers, other_layers)
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_and_digest_runs_and_reports_progress() {
    let Some(mut h) = harness("pull_by_tag_and_digest") else {
        return;
    };
    let registry = Registry::start();
    let (digest, _, _) = two_images(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    // Every PropertiesChanged of job objects, from before the pull starts.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace("/org/berth/Engine1/job")
        .build()
        .unwrap();
    let mut signals =
        zbus::MessageStream::for_match_rule(rule, &connection, std::num::NonZeroUsize::new(1000))
            .await
            .unwrap();
    let reference = format!("{}/app:1", registry.host());
    let started = Instant::now();
    let job = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "PullImage waited for the transfer"
    );
    assert_eq!(job.target().await.unwrap(), reference);
    let image_path = job.wait().await.unwrap();
    assert_eq!(job.state().await.unwrap(), "completed");
    assert_eq!(job.progress().await.unwrap(), 1.0);
    assert_eq!(job.result().await.unwrap(), image_path);
    let image = ImageProxy::builder(&connection)
        .path(image_path.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(
        image.repo_digests().await.unwrap(),
        [format!("{}/app@{digest}", registry.host())]
    );
    assert_eq!(image.names().await.unwrap(), vec![reference.clone()]);
    let inspect = image.inspect().await.unwrap();
    assert!(inspect.contains(&digest), "{inspect}");

    // Progress: never decreasing, ends at 1, at most ~20 changes a second.
    let mut progress = Vec::new();
    let mut times = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            message = signals.next() => {
                let Some(Ok(message)) = message else { break };
                let (_, changed, _): (String, HashMap<String, zbus::OwnedVariant>, Vec<String>) = message.body().deserialize().unwrap();
                times.push(Instant::now());
                if let Some(value) = changed.get("Progress") {
                    progress.push(f64::try_from(value.try_clone().unwrap()).unwrap());
                }
            }
        }
    }
    let known: Vec<f64> = progress.iter().copied().filter(|p| *p >= 0.0).collect();
    assert!(known.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(known.last(), Some(&1.0), "{progress:?}");
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let seconds = last.duration_since(*first).as_secs_f64().max(1.0);
        assert!(
            (times.len() as f64) / seconds < 20.0,
            "{} signals in {seconds}s",
            times.len()
        );
    }

    // The image runs.
    let output = h.berthctl(&["run", "--rm", &reference, "cat", "/hello"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from the registry\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // By digest: the same image, with nothing fetched again.
    let by_digest = format!("{}/app@{digest}", registry.host());
    let job = start_pull(
        &connection,
        &by_digest,
        pull_options(&registry, &[("Policy", Variant::from("always"))]),
    )
    .await
    .unwrap();
    assert_eq!(job.wait().await.unwrap(), image_path);
    assert_eq!(job.bytes_total().await.unwrap(), 0);

    // The pull event names the caller.
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let events = manager.get_events(0, 0).await.unwrap();
    let pull = events.iter().find(|e| e.3 == "pull").expect("a pull event");
    assert_eq!(pull.4.get("uid").map(String::as_str), Some("0"));
    // The password is nowhere in the log.
    let log = std::fs::read_to_string(h.dir.path().join("berthd.log")).unwrap_or_default();
    assert!(!log.contains(PASSWORD));
    // `images --digests` shows it.
    let listing = h.berthctl(&["images", "--digests"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains(&digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_layers_are_not_fetched_again_and_concurrent_pulls_share_one_download() {
    let Some(mut h) = harness("pull_shared_layers") else {
        return;
    };
    let registry = Registry::start();
    let (_, app_layers, other_layers) = two_images(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let app = format!("{}/app:1", registry.host());
    // Two pulls of the same image at once: one download, one image.
    let first = start_pull(&connection, &app, pull_options(&registry, &[]))
        .await
        .unwrap();
    let second = start_pull(&connection, &app, pull_options(&registry, &[]))
        .await
        .unwrap();
    let (a, b) = (first.wait().await.unwrap(), second.wait().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(image_ids(&connection).await.len(), 1);
    for layer in &app_layers {
        assert_eq!(
            registry.blob_gets(layer),
            1,
            "{layer} fetched more than once"
        );
    }
    // The second image shares the base: only its own layer travels.
    let other = start_pull(
        &connection,
        &format!("{}/other:1", registry.host()),
        pull_options(&registry, &[]),
    )
    .await
    .unwrap();
    other.wait().await.unwrap();
    assert_eq!(other_layers[0], app_layers[0]);
    assert_eq!(
        registry.blob_gets(&other_layers[0]),
        1,
        "the shared base was fetched again"
    );
    assert_eq!(registry.blob_gets(&other_layers[1]), 1);
    let own = std::fs::metadata(registry.blob_file(&other_layers[1]))
        .unwrap()
        .len();
    assert_eq!(other.bytes_total().await.unwrap(), own);
    assert_eq!(image_ids(&connection).await.len(), 2);
    let manager = ManagerProxy::new(&connection).await.unwrap();
    assert_eq!(
        manager.list_jobs().await.unwrap().len(),
        3,
        "finished jobs stay a while"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_newer_pulls_only_when_the_registry_digest_differs() {
    let Some(mut h) = harness("pull_policy_newer") else {
        return;
    };
    let registry = Registry::start();
    two_images(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let app = format!("{}/app:1", registry.host());
    let newer = || pull_options(&registry, &[("Policy", Variant::from("newer"))]);
    let manifest_gets = || registry.requests("GET", "/v2/app/manifests/1");
    let manifest_heads = || registry.requests("HEAD", "/v2/app/manifests/1");
    // Nothing local: it pulls.
    let job = start_pull(&connection, &app, newer()).await.unwrap();
    let first = job.wait().await.unwrap();
    assert_eq!(manifest_gets(), 1);
    // Unchanged on the registry: one HEAD, no manifest, no blob.
    let log_before = registry.log().lines().count();
    let job = start_pull(&connection, &app, newer()).await.unwrap();
    assert_eq!(job.wait().await.unwrap(), first);
    assert_eq!(job.bytes_total().await.unwrap(), 0);
    assert_eq!(manifest_gets(), 1, "the manifest travelled again");
    assert_eq!(manifest_heads(), 1);
    let since: Vec<String> = registry
        .log()
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("\"GET /v2/app/"))
        .map(String::from)
        .collect();
    assert!(since.is_empty(), "{since:?}");
    // `always` fetches the manifest whatever the digest.
    let always = pull_options(&registry, &[("Policy", Variant::from("always"))]);
    let job = start_pull(&connection, &app, always).await.unwrap();
    assert_eq!(job.wait().await.unwrap(), first);
    assert_eq!(manifest_gets(), 2);
    // Another image pushed under the same tag: `newer` pulls it and the name moves.
    registry.push(&h.dir.path().join("other-layout"), "1", "app:1");
    let job = start_pull(&connection, &app, newer()).await.unwrap();
    let second = job.wait().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(manifest_gets(), 3);
    let image = ImageProxy::builder(&connection)
        .path(second)
        .build()
        .await
        .unwrap();
    assert_eq!(image.names().await.unwrap(), vec![app.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_platform_index_lands_the_host_platform() {
    let Some(mut h) = harness("pull_index") else {
        return;
    };
    let registry = Registry::start();
    let layout = h.dir.path().join("index-layout");
    let amd64 = ImageSpec {
        layers: vec![busybox_layer(&h), tar_of(&[("arch", b"amd64\n")])],
        architecture: "amd64",
        raw: false,
    };
    let arm64 = ImageSpec {
        layers: vec![tar_of(&[("arch", b"arm64\n")])],
        architecture: "arm64",
        raw: false,
    };
    let (amd64_digest, amd64_size, _) = write_image(&layout, &amd64);
    let (arm64_digest, arm64_size, arm64_layers) = write_image(&layout, &arm64);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm64_digest, "size": arm64_size,
              "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd64_digest, "size": amd64_size,
              "platform": { "os": "linux", "architecture": "amd64" } },
        ],
    })).unwrap();
    let index_digest = sha(&index);
    std::fs::write(layout.join("blobs/sha256").join(&index_digest[7..]), &index).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(layout.join("index.json"), serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(),
        "annotations": { "org.opencontainers.image.ref.name": "multi" } }] }).to_string()).unwrap();
    let pushed = registry.push(&layout, "multi", "multi:1");
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let job = start_pull(
        &connection,
        &format!("{}/multi:1", registry.host()),
        pull_options(&registry, &[("Platform", Variant::from("linux/amd64"))]),
    )
    .await
    .unwrap();
    let path = job.wait().await.unwrap();
    let image = ImageProxy::builder(&connection)
        .path(path)
        .build()
        .await
        .unwrap();
    assert!(image
        .inspect()
        .await
        .unwrap()
        .contains("\"Architecture\": \"amd64\""));
    assert_eq!(
        image.repo_digests().await.unwrap(),
        [format!("{}/multi@{pushed}", registry.host())]
    );
    assert_eq!(
        registry.blob_gets(&arm64_layers[0]),
        0,
        "the arm64 layer travelled"
    );
    // The other platform on request.
    let job = start_pull(
        &connection,
        &format!("{}/multi:1", registry.host()),
        pull_options(
            &registry,
            &[
                ("Platform", Variant::from("linux/arm64")),
                ("Policy", Variant::from("always")),
            ],
        ),
    )
    .await
    .unwrap();
    let path = job.wait().await.unwrap();
    let image = ImageProxy::builder(&connection)
        .path(path)
        .build()
        .await
        .unwrap();
    assert!(image
        .inspect()
        .await
        .unwrap()
        .contains("\"Architecture\": \"arm64\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_pulls_have_their_error_names_and_leave_nothing() {
    let Some(mut h) = harness("pull_failures") else {
        return;
    };
    let registry = Registry::start();
    let (_, app_layers, other_layers) = two_images(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let app = format!("{}/app:1", registry.host());
    let cert_dir = registry.cert_dir().display().to_string();
    let expect_failure = |reference: String,
                          options: HashMap<&'static str, Variant<'static>>,
                          name: &'static str| {
        let connection = connection.clone();
        async move {
            let started = Instant::now();
            let job = start_pull(&connection, &reference, options).await.unwrap();
            let error = job.wait().await.unwrap_err();
            assert_eq!(error_name(&error), name, "{error}");
            assert!(started.elapsed() < Duration::from_secs(10));
            assert_eq!(job.state().await.unwrap(), "failed");
            let text = job.error().await.unwrap();
            assert!(!text.contains(PASSWORD), "{text}");
            (error.to_string(), text)
        }
    };
    let wrong = HashMap::from([
        (
            "Credentials",
            Variant::from(format!("{USER}:wrong-{PASSWORD}")),
        ),
        ("CertDir", Variant::from(cert_dir.clone())),
    ]);
    let (error, _) = expect_failure(
        app.clone(),
        wrong,
        "org.berth.Engine1.Error.AuthenticationFailed",
    )
    .await;
    assert!(!error.contains(PASSWORD));
    expect_failure(
        format!("{}/app:nope", registry.host()),
        pull_options(&registry, &[]),
        "org.berth.Engine1.Error.NoSuchImage",
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    expect_failure(
        format!("127.0.0.1:{closed}/app:1"),
        pull_options(&registry, &[]),
        "org.berth.Engine1.Error.RegistryError",
    )
    .await;
    // A blob corrupted on the registry's disk.
    let blob = registry.blob_file(&app_layers[1]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let (_, text) = expect_failure(
        app.clone(),
        pull_options(&registry, &[]),
        "org.berth.Engine1.Error.RegistryError",
    )
    .await;
    assert!(text.contains(&app_layers[1]), "{text}");
    // A blob larger than its descriptor says (bytes appended on the registry's disk).
    let blob = registry.blob_file(&other_layers[1]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&blob, bytes).unwrap();
    let (_, text) = expect_failure(
        format!("{}/other:1", registry.host()),
        pull_options(&registry, &[]),
        "org.freedesktop.DBus.Error.InvalidArgs",
    )
    .await;
    assert!(text.contains("larger"), "{text}");
    assert!(image_ids(&connection).await.is_empty());
    assert!(layer_store(&h).is_empty(), "{:?}", layer_store(&h));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_invalid_args() {
    let Some(mut h) = harness("pull_invalid_args") else {
        return;
    };
    let registry = Registry::start();
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let invalid = "org.freedesktop.DBus.Error.InvalidArgs";
    for reference in [
        "",
        "Bad/Upper:1",
        "127.0.0.1:5000/app:bad tag",
        "x@sha256:zz",
    ] {
        let error = manager
            .pull_image(reference, HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(error_name(&error), invalid, "{reference}: {error}");
    }
    let reference = format!("{}/app:1", registry.host());
    for options in [
        HashMap::from([("Colour", Variant::from("blue"))]),
        HashMap::from([("TlsVerify", Variant::from("yes"))]),
        HashMap::from([("Policy", Variant::from("sometimes"))]),
        HashMap::from([("Platform", Variant::from("linux"))]),
        HashMap::from([("Credentials", Variant::from("no-colon"))]),
    ] {
        let error = manager
            .pull_image(&reference, options.clone())
            .await
            .unwrap_err();
        assert_eq!(error_name(&error), invalid, "{options:?}: {error}");
    }
}

/// A tiny HTTPS server (python3, the registry's leaf certificate) that answers `/v2/` and
/// any manifest URL with `size` bytes of JSON whitespace: with a `Content-Length` when the
/// URL ends in `/sized`, else close-delimited. It prints `aborted PATH SENT` when the client
/// hung up before the end, `complete PATH SENT` otherwise.
const HUGE_MANIFEST_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if self.path.endswith("/sized"):
            self.send_header("Content-Length", str(size))
        self.end_headers()
        sent, chunk = 0, b" " * 65536
        try:
            while sent < size:
                self.wfile.write(chunk)
                sent += len(chunk)
            print("complete", self.path, sent, flush=True)
        except OSError:
            print("aborted", self.path, sent, flush=True)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_over_4_mib_is_invalid_args_and_is_never_read_whole() {
    let Some(mut h) = harness("pull_huge_manifest") else {
        return;
    };
    // The registry only lends its certificates: Debian's refuses to store such a manifest.
    let registry = Registry::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = h.dir.path().join("huge-manifest-server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new("python3")
        .arg("-c")
        .arg(HUGE_MANIFEST_SERVER)
        .arg(port.to_string())
        .arg(registry.dir.path().join("leaf.crt"))
        .arg(registry.dir.path().join("leaf.key"))
        .arg((64u64 << 20).to_string())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let options = || {
        HashMap::from([(
            "CertDir",
            Variant::from(registry.cert_dir().display().to_string()),
        )])
    };
    for tag in ["sized", "streamed"] {
        let job = start_pull(
            &connection,
            &format!("127.0.0.1:{port}/huge:{tag}"),
            options(),
        )
        .await
        .unwrap();
        let error = job.wait().await.unwrap_err();
        assert_eq!(
            error_name(&error),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{tag}: {error}"
        );
        assert_eq!(job.state().await.unwrap(), "failed");
        let text = job.error().await.unwrap();
        assert!(text.contains("larger than the 4194304 bytes"), "{text}");
    }
    // The 64 MiB without a length: berthd hung up after about 4 MiB.
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("/huge/manifests/streamed")
    });
    let served = std::fs::read_to_string(&log_path).unwrap();
    let line = served
        .lines()
        .find(|l| l.contains("/huge/manifests/streamed"))
        .unwrap();
    assert!(line.starts_with("aborted"), "{served}");
    assert!(image_ids(&connection).await.is_empty());
    assert!(layer_store(&h).is_empty(), "{:?}", layer_store(&h));
    let _ = server.kill();
    let _ = server.wait();
}

/// `len` incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut state = 0x9e3779b97f4a7c15u64 ^ seed;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// An image with one ~160 MB layer of incompressible bytes; its reference and layer digest.
fn large_image(h: &Harness, registry: &Registry) -> (String, String) {
    let data = noise(160 << 20, 0);
    let layout = h.dir.path().join("large-layout");
    let layers = layout_of(
        &layout,
        "1",
        &ImageSpec {
            layers: vec![tar_of(&[("big", &data)])],
            architecture: "amd64",
            raw: true,
        },
    );
    registry.push(&layout, "1", "large:1");
    (format!("{}/large:1", registry.host()), layers[0].clone())
}

async fn wait_for_bytes(job: &JobProxy<'_>) {
    let start = Instant::now();
    while job.bytes_done().await.unwrap() == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no byte arrived");
        assert_eq!(job.state().await.unwrap(), "running");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_images_pulled_at_once_download_their_shared_layer_once() {
    let Some(mut h) = harness("pull_shared_download") else {
        return;
    };
    let registry = Registry::start();
    // A 48 MiB base that takes a while to travel, under two different images.
    let base = tar_of(&[("base", &noise(48 << 20, 1))]);
    let mut layers = Vec::new();
    for name in ["first", "second"] {
        let layout = h.dir.path().join(format!("{name}-layout"));
        let own = format!("{name}\n");
        layers.push(layout_of(
            &layout,
            "1",
            &ImageSpec {
                layers: vec![base.clone(), tar_of(&[(name, own.as_bytes())])],
                architecture: "amd64",
                raw: true,
            },
        ));
        registry.push(&layout, "1", &format!("{name}:1"));
    }
    assert_eq!(layers[0][0], layers[1][0]);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let first = start_pull(
        &connection,
        &format!("{}/first:1", registry.host()),
        pull_options(&registry, &[]),
    )
    .await
    .unwrap();
    let second = start_pull(
        &connection,
        &format!("{}/second:1", registry.host()),
        pull_options(&registry, &[]),
    )
    .await
    .unwrap();
    let (a, b) = (first.wait().await.unwrap(), second.wait().await.unwrap());
    assert_ne!(a, b);
    assert_eq!(
        registry.blob_gets(&layers[0][0]),
        1,
        "the shared layer travelled twice"
    );
    assert_eq!(registry.blob_gets(&layers[0][1]), 1);
    assert_eq!(registry.blob_gets(&layers[1][1]), 1);
    assert_eq!(image_ids(&connection).await.len(), 2);
    // Three layers, no staging directory left.
    wait_until(Duration::from_secs(2), || layer_store(&h).len() == 3);
    assert!(layer_store(&h).iter().all(|l| !l.starts_with('.')));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_one_of_two_pulls_sharing_a_download_leaves_the_other_to_complete() {
    let Some(mut h) = harness("pull_cancel_joined") else {
        return;
    };
    let registry = Registry::start();
    let (reference, layer) = large_image(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let first = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    let second = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    wait_for_bytes(&first).await;
    wait_for_bytes(&second).await;
    let started = Instant::now();
    first.cancel().await.unwrap();
    let error = first.wait().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.Cancelled");
    assert_eq!(first.state().await.unwrap(), "cancelled");
    let image = second.wait().await.unwrap();
    assert_eq!(second.state().await.unwrap(), "completed");
    assert_eq!(second.progress().await.unwrap(), 1.0);
    assert_eq!(image_ids(&connection).await.len(), 1);
    assert_eq!(registry.blob_gets(&layer), 1, "the layer travelled twice");
    let image = ImageProxy::builder(&connection)
        .path(image)
        .build()
        .await
        .unwrap();
    assert_eq!(image.names().await.unwrap(), vec![reference]);
    wait_until(Duration::from_secs(2), || layer_store(&h).len() == 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_during_a_pull_is_no_space_leaving_nothing_then_the_pull_succeeds() {
    let Some(mut h) = harness("pull_no_space") else {
        return;
    };
    let registry = Registry::start();
    two_images(&h, &registry);
    let root = h.root();
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on --root");
    h.start_berthd(&[]);
    {
        let connection = h.connection().await;
        // Full but for 256 KiB: the pull starts writing, then the disk is full.
        let filler = root.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
        let full = file.metadata().unwrap().len();
        file.set_len(full - (256 << 10)).unwrap();
        drop(file);
        let app = format!("{}/app:1", registry.host());
        let job = start_pull(&connection, &app, pull_options(&registry, &[]))
            .await
            .unwrap();
        let error = job.wait().await.unwrap_err();
        assert_eq!(
            error_name(&error),
            "org.berth.Engine1.Error.NoSpace",
            "{error}"
        );
        assert_eq!(job.state().await.unwrap(), "failed");
        assert!(job.bytes_done().await.unwrap() > 0, "nothing was written");
        assert!(image_ids(&connection).await.is_empty());
        wait_until(Duration::from_secs(2), || layer_store(&h).is_empty());
        // Space freed: the same pull succeeds.
        std::fs::remove_file(&filler).unwrap();
        let job = start_pull(&connection, &app, pull_options(&registry, &[]))
            .await
            .unwrap();
        job.wait().await.unwrap();
        assert_eq!(image_ids(&connection).await.len(), 1);
    }
    h.kill_berthd();
    let unmounted = Command::new("umount").arg(&root).status().unwrap();
    assert!(unmounted.success(), "umount --root");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_a_large_pull_ends_cancelled_within_a_second_leaving_nothing() {
    let Some(mut h) = harness("pull_cancel") else {
        return;
    };
    let registry = Registry::start();
    let (reference, _) = large_image(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let job = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    wait_for_bytes(&job).await;
    let started = Instant::now();
    job.cancel().await.unwrap();
    let error = job.wait().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error_name(&error), "org.berth.Engine1.Error.Cancelled");
    assert_eq!(job.state().await.unwrap(), "cancelled");
    assert!(image_ids(&connection).await.is_empty());
    wait_until(Duration::from_secs(2), || layer_store(&h).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn berthd_killed_mid_pull_leaves_no_partial_layer_and_the_pull_then_succeeds() {
    let Some(mut h) = harness("pull_killed") else {
        return;
    };
    let registry = Registry::start();
    let (reference, _) = large_image(&h, &registry);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let job = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    wait_for_bytes(&job).await;
    h.kill_berthd();
    drop(job);
    h.start_berthd(&[]);
    let connection = h.connection().await;
    assert!(layer_store(&h).is_empty(), "{:?}", layer_store(&h));
    let manager = ManagerProxy::new(&connection).await.unwrap();
    assert!(manager.list_jobs().await.unwrap().is_empty());
    assert!(image_ids(&connection).await.is_empty());
    let job = start_pull(&connection, &reference, pull_options(&registry, &[]))
        .await
        .unwrap();
    job.wait().await.unwrap();
    assert_eq!(image_ids(&connection).await.len(), 1);
}

/// `dbus/org.berth.Engine1.Job.xml` equals the live introspection of a job (a failed one
/// stays listed); `BERTH_UPDATE_XML=1` rewrites it.
#[tokio::test(flavor = "multi_thread")]
async fn shipped_job_xml_equals_the_live_interface() {
    let Some(mut h) = harness("pull_job_xml") else {
        return;
    };
    h.start_berthd(&[]);
    let connection = h.connection().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let job = start_pull(
        &connection,
        &format!("127.0.0.1:{closed}/x:1"),
        HashMap::new(),
    )
    .await
    .unwrap();
    assert!(job.wait().await.is_err());
    let finished = Instant::now();
    let path = job.inner().path().to_string();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    assert_eq!(manager.list_jobs().await.unwrap().len(), 1);
    let interface = "org.berth.Engine1.Job";
    common::assert_shipped_introspection(&h, &path, interface);
    // A finished job goes 60 s after it ended.
    assert_eq!(manager.list_jobs().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(58).saturating_sub(finished.elapsed())).await;
    assert_eq!(
        manager.list_jobs().await.unwrap().len(),
        1,
        "gone before 60 s"
    );
    let start = Instant::now();
    while !manager.list_jobs().await.unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still listed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(5), || {
        let live = h.busctl(&["introspect", "--xml-interface", "org.berth.Engine1", &path]);
        !String::from_utf8_lossy(&live.stdout).contains(interface)
    });
}
