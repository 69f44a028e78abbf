//! The one place engine errors become D-Bus errors (`org.berth.Engine1.Error.*`, or the
//! standard `org.freedesktop.DBus.Error.*` names).

use zbus::message::{Header, Message};
use zbus::names::ErrorName;
use zbus::DBusError;

use crate::engine::EngineError;

/// Prefix of berth's own error names.
pub const PREFIX: &str = "org.berth.Engine1.Error";

/// A D-Bus error reply: berth's own names or the standard `org.freedesktop.DBus.Error.*`.
#[derive(Debug)]
pub struct BusError {
    name: String,
    message: String,
}

impl BusError {
    fn berth(kind: &str, message: impl Into<String>) -> BusError {
        BusError {
            name: format!("{PREFIX}.{kind}"),
            message: message.into(),
        }
    }

    fn standard(kind: &str, message: impl Into<String>) -> BusError {
        BusError {
            name: format!("org.freedesktop.DBus.Error.{kind}"),
            message: message.into(),
        }
    }

    pub fn invalid_args(message: impl Into<String>) -> BusError {
        BusError::standard("InvalidArgs", message)
    }

    pub fn access_denied(message: impl Into<String>) -> BusError {
        BusError::standard("AccessDenied", message)
    }

    /// polkit would ask the user, and the caller did not allow interaction.
    pub fn interactive_authorization_required(message: impl Into<String>) -> BusError {
        BusError::standard("InteractiveAuthorizationRequired", message)
    }

    pub fn failed(message: impl Into<String>) -> BusError {
        BusError::standard("Failed", message)
    }

    /// The error's D-Bus name (for tests and logs).
    pub fn error_name(&self) -> &str {
        &self.name
    }

    /// Prefixes the message, keeping the name (`Batch` reports the failing index).
    pub fn context(mut self, prefix: &str) -> BusError {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl From<EngineError> for BusError {
    fn from(error: EngineError) -> BusError {
        let message = error.to_string();
        match error {
            EngineError::NoSuchContainer(_) => BusError::berth("NoSuchContainer", message),
            EngineError::NoSuchImage(_) => BusError::berth("NoSuchImage", message),
            EngineError::NoSuchExecSession(_) => BusError::berth("NoSuchExecSession", message),
            EngineError::NameInUse(_) => BusError::berth("NameInUse", message),
            EngineError::ImageInUse(_) => BusError::berth("ImageInUse", message),
            EngineError::NoSuchVolume(_) => BusError::berth("NoSuchVolume", message),
            EngineError::VolumeInUse(_) => BusError::berth("VolumeInUse", message),
            EngineError::InvalidState { .. } | EngineError::HasDependents { .. } => {
                BusError::berth("InvalidState", message)
            }
            EngineError::ContainerStopped(_) => BusError::berth("ContainerStopped", message),
            EngineError::DependencyNotRunning { .. } => {
                BusError::berth("DependencyNotRunning", message)
            }
            EngineError::Runtime(_) => BusError::berth("RuntimeError", message),
            EngineError::NotSupported(_) => BusError::berth("NotSupported", message),
            EngineError::Removed(_) => BusError::berth("Removed", message),
            EngineError::InvalidArgument(_) => BusError::invalid_args(message),
            EngineError::NoSuchNetwork(_) => BusError::berth("NoSuchNetwork", message),
            EngineError::NetworkInUse(_) => BusError::berth("NetworkInUse", message),
            EngineError::LimitsExceeded(_) => BusError::standard("LimitsExceeded", message),
            EngineError::Internal(_) => BusError::failed(message),
            EngineError::EventsTrimmed { .. } => BusError::berth("EventsTrimmed", message),
            EngineError::RegistryError(_) => BusError::berth("RegistryError", message),
            EngineError::AuthenticationFailed(_) => {
                BusError::berth("AuthenticationFailed", message)
            }
            EngineError::Cancelled(_) => BusError::berth("Cancelled", message),
            EngineError::NoSpace(_) => BusError::berth("NoSpace", message),
        }
    }
}

impl From<zbus::Error> for BusError {
    fn from(error: zbus::Error) -> BusError {
        BusError::failed(error.to_string())
    }
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for BusError {}

impl DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::try_from(self.name.as_str()).unwrap_or_else(|_| {
            ErrorName::from_static_str_unchecked("org.freedesktop.DBus.Error.Failed")
        })
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

pub type BusResult<T> = std::result::Result<T, BusError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::State;

    #[test]
    fn engine_errors_map_to_the_designed_names() {
        let cases = [
            (
                EngineError::NoSuchContainer("x".into()),
                "org.berth.Engine1.Error.NoSuchContainer",
            ),
            (
                EngineError::NameInUse("x".into()),
                "org.berth.Engine1.Error.NameInUse",
            ),
            (
                EngineError::InvalidState {
                    id: "x".into(),
                    state: State::Paused,
                    verb: "stop",
                },
                "org.berth.Engine1.Error.InvalidState",
            ),
            (
                EngineError::ContainerStopped("x".into()),
                "org.berth.Engine1.Error.ContainerStopped",
            ),
            (
                EngineError::Runtime("boom".into()),
                "org.berth.Engine1.Error.RuntimeError",
            ),
            (
                EngineError::InvalidArgument("k".into()),
                "org.freedesktop.DBus.Error.InvalidArgs",
            ),
            (
                EngineError::LimitsExceeded("k".into()),
                "org.freedesktop.DBus.Error.LimitsExceeded",
            ),
            (
                EngineError::NoSpace("k".into()),
                "org.berth.Engine1.Error.NoSpace",
            ),
        ];
        for (error, name) in cases {
            assert_eq!(BusError::from(error).error_name(), name);
        }
    }

    #[test]
    fn invalid_state_messages_name_the_current_state() {
        let error = BusError::from(EngineError::InvalidState {
            id: "abc".into(),
            state: State::Paused,
            verb: "stop",
        });
        assert!(error.to_string().contains("paused"));
    }
}
