//! Credentials from auth files, as podman (containers/image) finds them: an explicit file,
//! else `$REGISTRY_AUTH_FILE`, else `${XDG_RUNTIME_DIR:-/run/containers/<uid>}/containers/
//! auth.json`, `$XDG_CONFIG_HOME/containers/auth.json`, `~/.docker/config.json`,
//! `~/.dockercfg`, the first file with an entry for the registry winning. Within a file the
//! most specific key wins: `registry/namespace/repo`, then shorter prefixes, then `registry`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: String,
}

/// The files to look in, in podman's order, for berthd's own user (root).
pub fn default_files() -> Vec<PathBuf> {
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(file)];
    }
    let uid = nix::unistd::geteuid().as_raw();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|dir| PathBuf::from(dir).join("containers"))
        .unwrap_or_else(|| PathBuf::from(format!("/run/containers/{uid}")));
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    vec![
        runtime.join("auth.json"),
        config.join("containers/auth.json"),
        home.join(".docker/config.json"),
        home.join(".dockercfg"),
    ]
}

/// `https://index.docker.io/v1/` → `docker.io`; `host:5000/` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key.strip_suffix("/v1").unwrap_or(key);
    let key = key.strip_suffix("/v2").unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

fn decode(entry: &Entry, file: &Path) -> Result<Option<(String, String)>, RegistryError> {
    if entry.auth.is_empty() {
        return Ok(None);
    }
    // Never echo the entry itself: it is the secret.
    let invalid = || {
        RegistryError::InvalidArgument(format!(
            "auth file {}: an entry is not base64 of user:password",
            file.display()
        ))
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (user, password) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Some((user.to_string(), password.to_string())))
}

/// The credentials for `registry/repository` in `file`, if it has an entry.
fn lookup_in(
    file: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<(String, String)>, RegistryError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(RegistryError::InvalidArgument(format!(
                "auth file {}: {error}",
                file.display()
            )))
        }
    };
    let parsed: AuthFile = serde_json::from_str(&text).map_err(|e| {
        RegistryError::InvalidArgument(format!("auth file {}: {e}", file.display()))
    })?;
    let entries: BTreeMap<String, &Entry> = parsed
        .auths
        .iter()
        .map(|(key, entry)| (normalize_key(key), entry))
        .collect();
    let mut scope = format!("{registry}/{repository}");
    loop {
        if let Some(entry) = entries.get(&scope) {
            return decode(entry, file);
        }
        match scope.rsplit_once('/') {
            Some((shorter, _)) => scope = shorter.to_string(),
            None => return Ok(None),
        }
    }
}

/// The first credentials for `registry/repository` in `files`.
pub fn lookup(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<(String, String)>, RegistryError> {
    for file in files {
        if let Some(found) = lookup_in(file, registry, repository)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// `user:password` from the `Credentials` option (the password may contain colons).
pub fn parse_credentials(text: &str) -> Result<(String, String), RegistryError> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_string(), password.to_string())),
        _ => Err(RegistryError::InvalidArgument(
            "Credentials must be user:password".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user_password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(user_password)
    }

    #[test]
    fn the_most_specific_entry_of_the_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        std::fs::write(
            &first,
            serde_json::json!({ "auths": {
                "127.0.0.1:5000": { "auth": auth("all:one") },
                "127.0.0.1:5000/team": { "auth": auth("team:two") },
            }})
            .to_string(),
        )
        .unwrap();
        let second = dir.path().join("config.json");
        std::fs::write(
            &second,
            serde_json::json!({ "auths": {
                "https://index.docker.io/v1/": { "auth": auth("hub:pass:with:colons") },
                "127.0.0.1:5000": { "auth": auth("later:ignored") },
            }})
            .to_string(),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), first, second];
        let found =
            |registry: &str, repository: &str| lookup(&files, registry, repository).unwrap();
        assert_eq!(
            found("127.0.0.1:5000", "team/app"),
            Some(("team".into(), "two".into()))
        );
        assert_eq!(
            found("127.0.0.1:5000", "other"),
            Some(("all".into(), "one".into()))
        );
        assert_eq!(
            found("docker.io", "library/alpine"),
            Some(("hub".into(), "pass:with:colons".into()))
        );
        assert_eq!(found("quay.io", "x"), None);
    }

    #[test]
    fn a_bad_entry_is_reported_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"auths":{"r.io":{"auth":"c2VjcmV0"}}}"#).unwrap();
        let error = lookup(&[file], "r.io", "x").unwrap_err().to_string();
        assert!(
            !error.contains("c2VjcmV0") && !error.contains("secret"),
            "{error}"
        );
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        assert_eq!(
            parse_credentials("u:p:q").unwrap(),
            ("u".to_string(), "p:q".to_string())
        );
        assert!(parse_credentials("nocolon").is_err());
        assert!(parse_credentials(":p").is_err());
    }
}
