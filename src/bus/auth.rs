//! Who may call what (DESIGN §2.5). Reading needs nothing; everything else passes for root
//! and, on a session bus, for the bus's owner. polkit arrives in a later issue; until then
//! every other caller is refused (fail closed).

use std::collections::HashMap;
use std::sync::Mutex;

use zbus::message::Header;

use super::error::{BusError, BusResult};
use crate::engine::Caller;

/// The polkit actions berth checks, by family of verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Lifecycle, create, remove.
    Manage,
    /// Exec, attach, logs.
    Exec,
    /// Mount, export, artifacts, checkpoint.
    Filesystem,
    /// Import, tag, untag, remove images.
    Images,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Manage => "org.berth.engine1.manage",
            Action::Exec => "org.berth.engine1.exec",
            Action::Filesystem => "org.berth.engine1.filesystem",
            Action::Images => "org.berth.engine1.images",
        }
    }
}

/// Caches each sender's uid: unique names are never reused on a bus.
pub struct Authorizer {
    connection: zbus::Connection,
    /// The uid whose calls pass besides root (the owner of a session bus).
    trusted_uid: Option<u32>,
    uids: Mutex<HashMap<String, u32>>,
}

const UID_CACHE_LIMIT: usize = 4096;

impl Authorizer {
    pub fn new(connection: zbus::Connection, trusted_uid: Option<u32>) -> Authorizer {
        Authorizer {
            connection,
            trusted_uid,
            uids: Mutex::new(HashMap::new()),
        }
    }

    /// The calling process's uid, from the bus daemon.
    pub async fn caller(&self, header: &Header<'_>) -> BusResult<Caller> {
        let sender = header
            .sender()
            .ok_or_else(|| BusError::access_denied("the call has no sender"))?
            .to_string();
        if let Some(uid) = self
            .uids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sender)
        {
            return Ok(Caller { uid: *uid });
        }
        let proxy = zbus::fdo::DBusProxy::new(&self.connection)
            .await
            .map_err(|e| BusError::access_denied(format!("cannot identify the caller: {e}")))?;
        let bus_name = zbus::names::BusName::try_from(sender.as_str())
            .map_err(|e| BusError::access_denied(format!("cannot identify the caller: {e}")))?;
        let uid = proxy
            .get_connection_unix_user(bus_name)
            .await
            .map_err(|e| BusError::access_denied(format!("cannot identify the caller: {e}")))?;
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if uids.len() >= UID_CACHE_LIMIT {
            uids.clear();
        }
        uids.insert(sender, uid);
        Ok(Caller { uid })
    }

    /// Checks a mutating call; returns the caller for the event it produces.
    pub async fn authorize(&self, header: &Header<'_>, action: Action) -> BusResult<Caller> {
        let caller = self.caller(header).await?;
        if caller.uid == 0 || Some(caller.uid) == self.trusted_uid {
            return Ok(caller);
        }
        Err(BusError::access_denied(format!(
            "uid {} is not authorized for {} (only root, until polkit support lands)",
            caller.uid,
            action.id()
        )))
    }
}
