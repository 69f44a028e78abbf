//! Artifacts: small named blobs kept beside a container (libpod's AddArtifact), one file each.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::names::is_valid_name;

/// The largest artifact accepted (1 MiB): artifacts travel as `ay` in a D-Bus message
/// (`AddArtifact` in `dbus/org.berth.Engine1.Container.xml`), which the system bus caps.
pub const MAX_ARTIFACT_SIZE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid artifact name {0:?}")]
    InvalidName(String),
    #[error("artifact {name:?} is {size} bytes, more than the {MAX_ARTIFACT_SIZE} allowed")]
    TooLarge { name: String, size: usize },
    #[error("no artifact {0:?}")]
    NotFound(String),
    #[error("artifact {name:?}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// The artifact directory of one container.
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    pub fn new(dir: &Path) -> Artifacts {
        Artifacts {
            dir: dir.to_path_buf(),
        }
    }

    /// Checks a name; a valid one can never leave the directory (no `/`, no leading `.`).
    pub fn check_name(name: &str) -> Result<(), ArtifactError> {
        if is_valid_name(name) {
            Ok(())
        } else {
            Err(ArtifactError::InvalidName(name.to_string()))
        }
    }

    fn io(name: &str) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Io {
            name: name.to_string(),
            source,
        }
    }

    /// Stores `data` under `name`, replacing any previous one atomically.
    pub fn add(&self, name: &str, data: &[u8]) -> Result<(), ArtifactError> {
        Self::check_name(name)?;
        if data.len() > MAX_ARTIFACT_SIZE {
            return Err(ArtifactError::TooLarge {
                name: name.to_string(),
                size: data.len(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(Self::io(name))?;
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&temporary).map_err(Self::io(name))?;
        file.write_all(data).map_err(Self::io(name))?;
        file.sync_all().map_err(Self::io(name))?;
        std::fs::rename(&temporary, self.dir.join(name)).map_err(Self::io(name))
    }

    pub fn get(&self, name: &str) -> Result<Vec<u8>, ArtifactError> {
        Self::check_name(name)?;
        std::fs::read(self.dir.join(name)).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ArtifactError::NotFound(name.to_string()),
            _ => Self::io(name)(error),
        })
    }

    pub fn remove(&self, name: &str) -> Result<(), ArtifactError> {
        Self::check_name(name)?;
        std::fs::remove_file(self.dir.join(name)).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ArtifactError::NotFound(name.to_string()),
            _ => Self::io(name)(error),
        })
    }

    pub fn list(&self) -> Result<Vec<String>, ArtifactError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Self::io("")(error)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| is_valid_name(name))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("artifacts"));
        store.add("b", b"2").unwrap();
        store.add("a", b"1").unwrap();
        assert_eq!(store.get("a").unwrap(), b"1");
        assert_eq!(store.list().unwrap(), vec!["a", "b"]);
        store.remove("a").unwrap();
        assert!(matches!(store.get("a"), Err(ArtifactError::NotFound(_))));
    }

    #[test]
    fn hostile_names_never_touch_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("artifacts"));
        for name in ["../x", "a/b", "..", ".hidden", ""] {
            assert!(
                matches!(store.add(name, b"x"), Err(ArtifactError::InvalidName(_))),
                "{name}"
            );
        }
        assert!(!dir.path().join("artifacts").exists());
    }

    #[test]
    fn oversized_artifacts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(dir.path());
        let big = vec![0u8; MAX_ARTIFACT_SIZE + 1];
        assert!(matches!(
            store.add("big", &big),
            Err(ArtifactError::TooLarge { .. })
        ));
    }
}
