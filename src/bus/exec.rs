//! `org.berth.Engine1.ExecSession`: one object per exec session, under its container's path.

use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::OwnedObjectPath;

use super::auth::Action;
use super::call::Served;
use super::error::BusError;
use super::property::{Property, Table};
use super::Shared;
use crate::engine::{Engine, ExecSession};

pub const INTERFACE: &str = "org.berth.Engine1.ExecSession";

/// `/org/berth/Engine1/container/<id>/exec/<session>`.
pub fn path(id: &str, session: &str) -> OwnedObjectPath {
    super::object_path("container", &format!("{id}/exec/{session}"))
}

pub struct ExecSessionObject {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub id: String,
    pub session: String,
}

impl ExecSessionObject {
    fn record(&self) -> Result<ExecSession, BusError> {
        Ok(self.engine.exec_session(&self.id, &self.session)?)
    }
}

impl Served for ExecSessionObject {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

const STATE: Property<ExecSession, String> = Property::new("State", |s| s.state().into());
const PID: Property<ExecSession, u32> = Property::new("Pid", |s| s.pid);
const EXIT_CODE: Property<ExecSession, i32> = Property::new("ExitCode", |s| s.exit_code);

/// Every property of the ExecSession interface announced with `PropertiesChanged`: the
/// getters read the same entries.
pub const ANNOUNCED: &Table<ExecSession> = &[&STATE, &PID, &EXIT_CODE];

#[interface(name = "org.berth.Engine1.ExecSession")]
impl ExecSessionObject {
    /// The pty master of a terminal session: read its output, write its input.
    #[zbus(name = "OpenPTY")]
    async fn open_pty(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<zbus::OwnedFd, BusError> {
        let call = self.call(&header);
        call.authorize(Action::Exec).await?;
        let master = self.engine.exec_open_pty(&self.id, &self.session).await?;
        Ok(zbus::OwnedFd::from(master))
    }

    /// Sets the session terminal's window size.
    async fn resize(
        &self,
        #[zbus(header)] header: Header<'_>,
        rows: u16,
        cols: u16,
    ) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Exec).await?;
        let result = self
            .engine
            .exec_resize(&self.id, &self.session, rows, cols)
            .await;
        call.reply(result).await
    }

    /// Sends a signal to the session's process.
    async fn kill(&self, #[zbus(header)] header: Header<'_>, signal: &str) -> Result<(), BusError> {
        let call = self.call(&header);
        let caller = call.authorize(Action::Exec).await?;
        let result = self
            .engine
            .exec_kill(caller, &self.id, &self.session, signal)
            .await;
        call.reply(result).await
    }

    /// Replies with the exit code once the session has exited.
    async fn wait(&self, #[zbus(header)] header: Header<'_>) -> Result<i32, BusError> {
        let call = self.call(&header);
        call.reply(self.engine.exec_wait(&self.id, &self.session).await)
            .await
    }

    /// Forgets an exited session.
    async fn remove(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        let call = self.call(&header);
        call.authorize(Action::Exec).await?;
        call.reply(self.engine.exec_remove(&self.id, &self.session).await)
            .await
    }

    /// The session's process exited with this code (128+signal when killed).
    #[zbus(signal)]
    pub async fn exited(emitter: &SignalEmitter<'_>, exit_code: i32) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.session.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn command(&self) -> Result<Vec<String>, BusError> {
        Ok(self.record()?.command)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn terminal(&self) -> Result<bool, BusError> {
        Ok(self.record()?.terminal)
    }

    #[zbus(property)]
    fn state(&self) -> Result<String, BusError> {
        Ok(STATE.read(&self.record()?))
    }

    #[zbus(property)]
    fn pid(&self) -> Result<u32, BusError> {
        Ok(PID.read(&self.record()?))
    }

    #[zbus(property)]
    fn exit_code(&self) -> Result<i32, BusError> {
        Ok(EXIT_CODE.read(&self.record()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_announced_property_of_the_xml_is_in_the_change_table() {
        let sample = ExecSession {
            command: vec!["true".into()],
            terminal: false,
            running: true,
            pid: 1,
            exit_code: 0,
            started_at: 0,
            finished_at: 0,
        };
        super::super::property::tests::assert_table_matches_xml(INTERFACE, ANNOUNCED, &sample);
    }
}
