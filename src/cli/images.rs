//! `import`, `images`, `rmi`, `tag`, `export`, `mount`, `unmount`.

use std::collections::HashMap;
use std::io::IsTerminal;

use zbus::Variant;

use super::proxy::{ImageProxy, ManagerProxy};
use super::{container, explain};

/// Streams FILE (or stdin for `-`) to `ImportImage` through a pipe, with a byte count on a
/// terminal.
pub async fn import(
    connection: &zbus::Connection,
    file: &str,
    reference: Option<String>,
) -> anyhow::Result<i32> {
    let source: Box<dyn std::io::Read + Send> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{file}: {e}"))?)
    };
    let (reader, writer) = std::io::pipe()?;
    let progress = std::io::stderr().is_terminal();
    let feeder = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut source = source;
        let mut writer = writer;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let read = source.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            std::io::Write::write_all(&mut writer, &buffer[..read])?;
            total += read as u64;
            if progress {
                eprint!("\rimporting: {} MB", total >> 20);
            }
        }
        if progress {
            eprintln!();
        }
        Ok(total)
    });
    let manager = ManagerProxy::new(connection).await?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(reference) = reference {
        options.insert("Reference", Variant::from(reference));
    }
    let fd: std::os::fd::OwnedFd = reader.into();
    let result = manager.import_image(zbus::Fd::from(fd), options).await;
    let _ = feeder.join();
    let path = result.map_err(explain)?;
    let image = ImageProxy::builder(connection).path(path).build().await?;
    println!("{}", image.id().await?);
    Ok(0)
}

pub async fn images(
    connection: &zbus::Connection,
    quiet: bool,
    digests: bool,
) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    let rows = manager.list_images().await.map_err(explain)?;
    if !quiet {
        if digests {
            println!(
                "{:<12}  {:<50}  {:<71}  {:>10}",
                "IMAGE ID", "NAME", "DIGEST", "SIZE"
            );
        } else {
            println!("{:<12}  {:<50}  {:>10}", "IMAGE ID", "NAME", "SIZE");
        }
    }
    for (id, name, size, path) in rows {
        if quiet {
            println!("{}", &id[..12.min(id.len())]);
        } else if digests {
            let image = ImageProxy::builder(connection).path(path).build().await?;
            let digest = image
                .repo_digests()
                .await
                .unwrap_or_default()
                .first()
                .and_then(|d| d.split_once('@').map(|(_, digest)| digest.to_string()))
                .unwrap_or_else(|| "<none>".into());
            println!(
                "{:<12}  {:<50}  {:<71}  {:>8} MB",
                &id[..12.min(id.len())],
                name,
                digest,
                size >> 20
            );
        } else {
            println!(
                "{:<12}  {:<50}  {:>8} MB",
                &id[..12.min(id.len())],
                name,
                size >> 20
            );
        }
    }
    Ok(0)
}

pub async fn remove(
    connection: &zbus::Connection,
    images: &[String],
    force: bool,
) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    for image in images {
        manager.remove_image(image, force).await.map_err(explain)?;
        println!("{image}");
    }
    Ok(0)
}

pub async fn tag(connection: &zbus::Connection, image: &str, name: &str) -> anyhow::Result<i32> {
    let manager = ManagerProxy::new(connection).await?;
    let path = manager.get_image(image).await.map_err(explain)?;
    let proxy = ImageProxy::builder(connection).path(path).build().await?;
    proxy.tag(name).await.map_err(explain)?;
    Ok(0)
}

/// Writes the container's root filesystem as a tar to stdout.
pub async fn export(connection: &zbus::Connection, name: &str) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    let stdout = std::io::stdout().as_fd_owned()?;
    proxy
        .export(zbus::Fd::from(stdout))
        .await
        .map_err(explain)?;
    Ok(0)
}

pub async fn mount(connection: &zbus::Connection, name: &str) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    println!("{}", proxy.mount().await.map_err(explain)?);
    Ok(0)
}

pub async fn unmount(
    connection: &zbus::Connection,
    name: &str,
    force: bool,
) -> anyhow::Result<i32> {
    let proxy = container(connection, name).await?;
    proxy.unmount(force).await.map_err(explain)?;
    println!("{name}");
    Ok(0)
}

/// Duplicates a standard stream's descriptor, to pass it over the bus.
trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl AsFdOwned for std::io::Stdout {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        std::os::fd::AsFd::as_fd(self).try_clone_to_owned()
    }
}
