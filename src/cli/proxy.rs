//! Client proxies for berth's interfaces (what `berthctl` and tests call).

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, Variant};

#[proxy(
    interface = "org.berth.Engine1.Manager",
    default_service = "org.berth.Engine1",
    default_path = "/org/berth/Engine1"
)]
pub trait Manager {
    fn create_container(&self, spec: HashMap<&str, Variant<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn get_container(&self, name_or_id: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_containers(&self) -> zbus::Result<Vec<(String, String, String, OwnedObjectPath)>>;
    fn remove_container(&self, name_or_id: &str, force: bool) -> zbus::Result<()>;
    fn import_image(
        &self,
        source: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn get_image(&self, reference_or_id: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_images(&self) -> zbus::Result<Vec<(String, String, u64, OwnedObjectPath)>>;
    fn remove_image(&self, reference_or_id: &str, force: bool) -> zbus::Result<()>;
    fn get_events(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> zbus::Result<Vec<(u64, u64, String, String, HashMap<String, String>)>>;
    fn create_volume(
        &self,
        name: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn get_volume(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_volumes(&self) -> zbus::Result<Vec<(String, String, OwnedObjectPath)>>;
    fn remove_volume(&self, name: &str, force: bool) -> zbus::Result<()>;
    fn prune_volumes(&self) -> zbus::Result<Vec<String>>;
    fn pull_image(
        &self,
        reference: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn list_jobs(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.berth.Engine1.Job",
    default_service = "org.berth.Engine1"
)]
pub trait Job {
    fn cancel(&self) -> zbus::Result<()>;
    fn wait(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn finished(&self, state: String, result: OwnedObjectPath, error: String) -> zbus::Result<()>;
    #[zbus(property)]
    fn id(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn target(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn bytes_total(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn detail(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn layers(&self) -> zbus::Result<Vec<(String, String, u64, u64)>>;
}

#[proxy(
    interface = "org.berth.Engine1.Container",
    default_service = "org.berth.Engine1"
)]
pub trait Container {
    fn init(&self) -> zbus::Result<()>;
    fn start(&self, recursive: bool) -> zbus::Result<()>;
    fn stop(&self, timeout_sec: u32) -> zbus::Result<()>;
    fn restart(&self, timeout_sec: u32) -> zbus::Result<()>;
    fn kill(&self, signal: &str) -> zbus::Result<()>;
    fn pause(&self) -> zbus::Result<()>;
    fn unpause(&self) -> zbus::Result<()>;
    fn wait(&self) -> zbus::Result<i32>;
    fn mount(&self) -> zbus::Result<String>;
    fn unmount(&self, force: bool) -> zbus::Result<()>;
    fn inspect(&self, size: bool) -> zbus::Result<String>;
    fn cleanup(&self) -> zbus::Result<()>;
    fn export(&self, destination: zbus::Fd<'_>) -> zbus::Result<()>;
    fn logs(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<zbus::OwnedFd>;
    fn sync(&self) -> zbus::Result<()>;
    fn refresh(&self) -> zbus::Result<()>;
    fn batch(&self, ops: Vec<(&str, HashMap<&str, Variant<'_>>)>) -> zbus::Result<()>;
    fn remove(&self, force: bool) -> zbus::Result<()>;
    fn attach(
        &self,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<(zbus::OwnedFd, zbus::OwnedFd, zbus::OwnedFd)>;
    fn start_and_attach(
        &self,
        recursive: bool,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<(zbus::OwnedFd, zbus::OwnedFd, zbus::OwnedFd)>;
    fn resize(&self, rows: u16, cols: u16) -> zbus::Result<()>;
    fn exec(
        &self,
        command: &[&str],
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn checkpoint(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn restore(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn add_artifact(&self, name: &str, data: &[u8]) -> zbus::Result<()>;
    fn get_artifact(&self, name: &str) -> zbus::Result<Vec<u8>>;
    fn remove_artifact(&self, name: &str) -> zbus::Result<()>;
    fn list_artifacts(&self) -> zbus::Result<Vec<String>>;

    #[zbus(signal)]
    fn event(
        &self,
        seq: u64,
        timestamp: u64,
        r#type: String,
        attributes: HashMap<String, String>,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn exited(&self, exit_code: i32) -> zbus::Result<()>;

    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exit_code(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn command(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn stop_timeout(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn terminal(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn exec_sessions(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn checkpointed(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn checkpointed_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn restored_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn restart_count(&self) -> zbus::Result<u32>;
    fn healthcheck(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn ready(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn health(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn health_failing_streak(&self) -> zbus::Result<u32>;
}

#[proxy(
    interface = "org.berth.Engine1.ExecSession",
    default_service = "org.berth.Engine1"
)]
pub trait ExecSession {
    #[zbus(name = "OpenPTY")]
    fn open_pty(&self) -> zbus::Result<zbus::OwnedFd>;
    fn resize(&self, rows: u16, cols: u16) -> zbus::Result<()>;
    fn kill(&self, signal: &str) -> zbus::Result<()>;
    fn wait(&self) -> zbus::Result<i32>;
    fn remove(&self) -> zbus::Result<()>;
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exit_code(&self) -> zbus::Result<i32>;
}

#[proxy(
    interface = "org.berth.Engine1.Image",
    default_service = "org.berth.Engine1"
)]
pub trait Image {
    fn tag(&self, name: &str) -> zbus::Result<()>;
    fn untag(&self, name: &str) -> zbus::Result<()>;
    fn remove(&self, force: bool) -> zbus::Result<()>;
    fn inspect(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn names(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn repo_digests(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn size(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.berth.Engine1.Volume",
    default_service = "org.berth.Engine1"
)]
pub trait Volume {
    fn export(&self, destination: zbus::Fd<'_>) -> zbus::Result<()>;
    fn import(&self, source: zbus::Fd<'_>) -> zbus::Result<()>;
    fn inspect(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn driver(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mountpoint(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn labels(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn anonymous(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn containers(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

/// A `CreateContainer` spec as a client builds it.
pub type Spec<'a> = HashMap<&'a str, Variant<'a>>;
