//! `registries.conf` as podman reads it, for what a pull needs: the
//! `unqualified-search-registries` list and the `[aliases]` table (short names). The main
//! file is `$CONTAINERS_REGISTRIES_CONF` or `/etc/containers/registries.conf`; the drop-ins
//! of `/etc/containers/registries.conf.d/*.conf` follow in name order, each replacing the
//! search list it sets and adding its aliases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a pull reads from `registries.conf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistriesConf {
    pub unqualified_search_registries: Vec<String>,
    /// Short name → fully qualified repository.
    pub aliases: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "unqualified-search-registries")]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

impl RegistriesConf {
    /// The host's configuration, as podman finds it.
    pub fn load() -> RegistriesConf {
        let main = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf"));
        let mut files = vec![main];
        if let Ok(entries) = std::fs::read_dir("/etc/containers/registries.conf.d") {
            let mut dropins: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        RegistriesConf::from_files(&files)
    }

    /// Reads `files` in order; one that is missing or malformed is skipped (with a warning),
    /// as one bad drop-in should not stop every pull.
    pub fn from_files(files: &[impl AsRef<Path>]) -> RegistriesConf {
        let mut conf = RegistriesConf::default();
        for path in files {
            let path = path.as_ref();
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            match toml::from_str::<File>(&text) {
                Ok(file) => conf.merge(file),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "skipping registries.conf")
                }
            }
        }
        conf
    }

    fn merge(&mut self, file: File) {
        if let Some(search) = file.unqualified_search_registries {
            self.unqualified_search_registries = search;
        }
        self.aliases.extend(file.aliases);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_ins_replace_the_search_list_and_add_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        std::fs::write(
            &main,
            "unqualified-search-registries = [\"docker.io\", \"quay.io\"]\n\
             [aliases]\n\"alpine\" = \"docker.io/library/alpine\"\n",
        )
        .unwrap();
        let dropin = dir.path().join("01-local.conf");
        std::fs::write(
            &dropin,
            "unqualified-search-registries = [\"127.0.0.1:5000\"]\n\
             [aliases]\n\"tool\" = \"quay.io/me/tool\"\n",
        )
        .unwrap();
        let bad = dir.path().join("02-bad.conf");
        std::fs::write(&bad, "this is = = not toml").unwrap();
        let conf = RegistriesConf::from_files(&[main, dropin, bad, dir.path().join("missing")]);
        assert_eq!(conf.unqualified_search_registries, ["127.0.0.1:5000"]);
        assert_eq!(conf.aliases["alpine"], "docker.io/library/alpine");
        assert_eq!(conf.aliases["tool"], "quay.io/me/tool");
    }
}
