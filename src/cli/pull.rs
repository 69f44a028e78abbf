//! `pull REF`: starts a `PullImage` job and shows a progress bar per layer until it ends;
//! `run IMAGE` uses [`ensure`] to pull a missing image first (podman's `--pull=missing`).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use zbus::Variant;

use super::explain;
use super::proxy::{ImageProxy, JobProxy, ManagerProxy};

/// How to reach the registry (shared by `pull` and `run`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Credentials for the registry, `USER:PASSWORD`.
    #[arg(long)]
    pub creds: Option<String>,
    /// `--tls-verify=false` accepts any certificate.
    #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
    pub tls_verify: bool,
    /// Directory of `*.crt` CA certificates to trust (default:
    /// /etc/containers/certs.d/HOST[:PORT]/).
    #[arg(long)]
    pub cert_dir: Option<String>,
    /// An auth.json to read credentials from.
    #[arg(long)]
    pub authfile: Option<String>,
    /// `os/arch[/variant]` of the image to pick from an index.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(clap::Args)]
pub struct PullArgs {
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
}

fn options<'a>(registry: &'a RegistryArgs, policy: &'a str) -> HashMap<&'static str, Variant<'a>> {
    let mut options = HashMap::from([
        ("Policy", Variant::from(policy)),
        ("TlsVerify", Variant::from(registry.tls_verify)),
    ]);
    for (key, value) in [
        ("Credentials", &registry.creds),
        ("CertDir", &registry.cert_dir),
        ("AuthFile", &registry.authfile),
        ("Platform", &registry.platform),
    ] {
        if let Some(value) = value {
            options.insert(key, Variant::from(value.as_str()));
        }
    }
    options
}

/// Runs a pull job to its end with per-layer bars on stderr; returns the image id.
async fn follow(
    connection: &zbus::Connection,
    reference: &str,
    registry: &RegistryArgs,
    policy: &str,
    quiet: bool,
) -> anyhow::Result<String> {
    let manager = ManagerProxy::new(connection).await?;
    let path = manager
        .pull_image(reference, options(registry, policy))
        .await
        .map_err(explain)?;
    let job = JobProxy::builder(connection).path(path).build().await?;
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style =
        ProgressStyle::with_template("{prefix:.bold} {msg:<11} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut layers: HashMap<String, ProgressBar> = HashMap::new();
    let wait = job.wait();
    tokio::pin!(wait);
    let outcome = loop {
        tokio::select! {
            outcome = &mut wait => break outcome,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        for (digest, status, done, total) in job.layers().await.unwrap_or_default() {
            let bar = layers.entry(digest.clone()).or_insert_with(|| {
                let bar = bars.add(ProgressBar::new(total));
                bar.set_style(style.clone());
                bar.set_prefix(
                    digest
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect::<String>(),
                );
                bar
            });
            bar.set_message(status.clone());
            bar.set_position(if status == "present" { total } else { done });
        }
    };
    for bar in layers.values() {
        bar.finish();
    }
    let image_path = outcome.map_err(explain)?;
    let image = ImageProxy::builder(connection)
        .path(image_path)
        .build()
        .await?;
    Ok(image.id().await?)
}

pub async fn pull(connection: &zbus::Connection, args: PullArgs) -> anyhow::Result<i32> {
    let id = follow(
        connection,
        &args.reference,
        &args.registry,
        "always",
        args.quiet,
    )
    .await?;
    println!("{id}");
    Ok(0)
}

/// Pulls `image` first when `policy` says so (`missing`: only when no local image has that
/// name; `always`; `never`: never).
pub async fn ensure(
    connection: &zbus::Connection,
    image: &str,
    policy: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<()> {
    match policy {
        "never" => Ok(()),
        "missing" | "always" | "newer" => {
            let manager = ManagerProxy::new(connection).await?;
            if policy == "missing" && manager.get_image(image).await.is_ok() {
                return Ok(());
            }
            follow(connection, image, registry, policy, false)
                .await
                .map(|_| ())
        }
        other => Err(anyhow::anyhow!(
            "--pull={other}: expected missing, always, newer or never"
        )),
    }
}
