//! Pulling from OCI/Docker v2 registries: references and short names (`names`), where
//! credentials come from (`auth`), `registries.conf` (`conf`), and the transfer itself
//! (`client`: manifests, platform choice, blobs streamed to disk and verified). The protocol
//! and its token dance are `oci-client`'s; no engine or zbus type is named here.

pub mod auth;
pub mod client;
pub mod conf;
pub mod names;

/// What can go wrong talking to a registry, by what a caller can tell apart.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request itself is wrong (reference, option, a manifest or blob out of bounds).
    #[error("{0}")]
    InvalidArgument(String),
    /// The registry refused the credentials (or wants some).
    #[error("{0}")]
    Authentication(String),
    /// The registry has no such manifest (unknown tag, digest or repository).
    #[error("{0}")]
    ManifestUnknown(String),
    /// Anything else the registry or the connection did: status and message.
    #[error("{0}")]
    Registry(String),
    #[error("pull cancelled")]
    Cancelled,
    /// The local side: writing the blob to disk.
    #[error("{what}: {source}")]
    Local {
        what: String,
        source: std::io::Error,
    },
}

/// `os/arch[/variant]` (`linux/amd64`, `linux/arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The host's, with Go's architecture names as images use them.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    pub fn parse(text: &str) -> Result<Platform, RegistryError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, architecture] if valid(os) && valid(architecture) => Ok(Platform {
                os: os.to_string(),
                architecture: architecture.to_string(),
                variant: None,
            }),
            [os, architecture, variant] if [os, architecture, variant].into_iter().all(valid) => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: architecture.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(RegistryError::InvalidArgument(format!(
                "platform {text:?} is not os/arch[/variant]"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// How to reach one registry.
#[derive(Clone, Default)]
pub struct Connection {
    /// `user`, `password`; None = anonymous.
    pub credentials: Option<(String, String)>,
    pub tls_verify: bool,
    /// PEM certificates (`*.crt` of the cert dir) trusted besides the system's roots.
    pub extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Connection {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls_verify", &self.tls_verify)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// The `*.crt` files of a cert dir (podman's `/etc/containers/certs.d/<host[:port]>/`); a
/// missing directory trusts nothing extra.
pub fn read_cert_dir(dir: &std::path::Path) -> Result<Vec<Vec<u8>>, RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(RegistryError::InvalidArgument(format!(
                "cert dir {}: {error}",
                dir.display()
            )))
        }
    };
    let mut certificates = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            certificates.push(
                std::fs::read(&path).map_err(|e| {
                    RegistryError::InvalidArgument(format!("{}: {e}", path.display()))
                })?,
            );
        }
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_and_without_a_variant() {
        let arm = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(arm.variant.as_deref(), Some("v7"));
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().architecture,
            "amd64"
        );
        for bad in ["linux", "", "linux//amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_of_a_connection_hides_the_password() {
        let connection = Connection {
            credentials: Some(("alice".into(), "s3cret".into())),
            ..Default::default()
        };
        assert!(!format!("{connection:?}").contains("s3cret"));
    }
}
