//! Who may call what (the actions are in dbus/org.berth.Engine1.policy, the rules in the
//! README's "Installing"). Reading needs nothing; everything else passes for root and, on a
//! session bus, for the bus's owner; any other caller is checked with polkit
//! (`CheckAuthorization`, subject `system-bus-name`), failing closed on any error.

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

    /// Checks a mutating call; returns the caller for the event it produces. Root (and the
    /// owner of a session bus) pass; anyone else is asked of polkit with the verb and the
    /// container as details.
    pub async fn authorize(&self, header: &Header<'_>, action: Action) -> BusResult<Caller> {
        self.authorize_with(header, action, &[]).await
    }

    /// Whether the caller may do `action`, asked without interaction: for a call that is
    /// open to everyone but shows more to those allowed (`Inspect` and the environment).
    pub async fn permits(&self, header: &Header<'_>, action: Action) -> bool {
        self.check(header, action, &[], false).await.is_ok()
    }

    /// As `authorize`, with extra polkit details (`command_line` for exec).
    pub async fn authorize_with(
        &self,
        header: &Header<'_>,
        action: Action,
        extra: &[(&str, String)],
    ) -> BusResult<Caller> {
        let interactive = header
            .primary()
            .flags()
            .contains(zbus::message::Flags::ALLOW_INTERACTIVE_AUTH);
        self.check(header, action, extra, interactive).await
    }

    async fn check(
        &self,
        header: &Header<'_>,
        action: Action,
        extra: &[(&str, String)],
        interactive: bool,
    ) -> BusResult<Caller> {
        let caller = self.caller(header).await?;
        if caller.uid == 0 || Some(caller.uid) == self.trusted_uid {
            return Ok(caller);
        }
        let mut details = HashMap::new();
        if let Some(member) = header.member() {
            details.insert("verb".to_string(), member.to_string());
        }
        if let Some(id) = header
            .path()
            .and_then(|path| path.as_str().strip_prefix("/org/berth/Engine1/container/"))
            .and_then(|rest| rest.split('/').next())
        {
            details.insert("container".to_string(), id.to_string());
        }
        for (key, value) in extra {
            details.insert(key.to_string(), value.clone());
        }
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        match polkit::check(&self.connection, &sender, action.id(), details, interactive).await {
            Ok(polkit::Verdict::Allowed) => Ok(caller),
            Ok(polkit::Verdict::NeedsInteraction) => {
                Err(BusError::interactive_authorization_required(format!(
                    "{} needs interactive authorization for uid {}; call with interactive \
                     authorization allowed",
                    action.id(),
                    caller.uid
                )))
            }
            Ok(polkit::Verdict::Denied) => Err(BusError::access_denied(format!(
                "uid {} is not authorized for {}",
                caller.uid,
                action.id()
            ))),
            // Fail closed: no polkit, an error or a timeout is a refusal.
            Err(reason) => Err(BusError::access_denied(format!(
                "uid {} is not authorized for {}: {reason}",
                caller.uid,
                action.id()
            ))),
        }
    }
}

/// polkit's `CheckAuthorization`, spoken with zbus.
mod polkit {
    use std::collections::HashMap;
    use std::time::Duration;

    use zbus::Variant;

    /// How long a non-interactive check may take; an interactive one waits for the user.
    const CHECK_LIMIT: Duration = Duration::from_secs(10);
    const INTERACTIVE_LIMIT: Duration = Duration::from_secs(120);

    /// `CheckAuthorizationFlags.AllowUserInteraction`.
    const ALLOW_USER_INTERACTION: u32 = 1;

    pub enum Verdict {
        Allowed,
        /// polkit would ask (an `auth_*` result) but the caller did not allow interaction.
        NeedsInteraction,
        Denied,
    }

    pub async fn check(
        connection: &zbus::Connection,
        sender: &str,
        action: &str,
        details: HashMap<String, String>,
        interactive: bool,
    ) -> Result<Verdict, String> {
        let limit = if interactive {
            INTERACTIVE_LIMIT
        } else {
            CHECK_LIMIT
        };
        let call = async {
            let proxy = zbus::Proxy::new(
                connection,
                "org.freedesktop.PolicyKit1",
                "/org/freedesktop/PolicyKit1/Authority",
                "org.freedesktop.PolicyKit1.Authority",
            )
            .await?;
            let subject = (
                "system-bus-name",
                HashMap::from([("name", Variant::from(sender))]),
            );
            let flags = if interactive {
                ALLOW_USER_INTERACTION
            } else {
                0
            };
            let reply = proxy
                .call_method("CheckAuthorization", &(subject, action, details, flags, ""))
                .await?;
            let (authorized, challenge, _details): (bool, bool, HashMap<String, String>) =
                reply.body().deserialize()?;
            Ok::<_, zbus::Error>((authorized, challenge))
        };
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(format!("polkit did not answer within {}s", limit.as_secs())),
            Ok(Err(error)) => Err(format!("polkit: {error}")),
            Ok(Ok((true, _))) => Ok(Verdict::Allowed),
            Ok(Ok((false, true))) if !interactive => Ok(Verdict::NeedsInteraction),
            Ok(Ok((false, _))) => Ok(Verdict::Denied),
        }
    }
}
