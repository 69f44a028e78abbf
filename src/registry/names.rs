//! References: validating them, and resolving short names as podman does (an alias from
//! `registries.conf`, else each of `unqualified-search-registries` in order).

use std::str::FromStr;

use oci_client::Reference;

use super::conf::RegistriesConf;
use super::RegistryError;

/// Whether `reference` names its registry (`quay.io/x`, `127.0.0.1:5000/x`, `localhost/x`),
/// by the rule podman and docker share: a first component with a dot, a colon, or
/// `localhost`.
pub fn is_qualified(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Parses a fully qualified reference, adding `:latest` when it has neither tag nor digest.
pub fn parse(reference: &str) -> Result<Reference, RegistryError> {
    Reference::from_str(reference)
        .map_err(|e| RegistryError::InvalidArgument(format!("reference {reference:?}: {e}")))
}

/// The full spelling: `registry/repository:tag` or `registry/repository@digest` (both when
/// both were given).
pub fn full_name(reference: &Reference) -> String {
    let mut name = format!("{}/{}", reference.registry(), reference.repository());
    match (reference.tag(), reference.digest()) {
        (tag, Some(digest)) => {
            if let Some(tag) = tag {
                name.push_str(&format!(":{tag}"));
            }
            name.push_str(&format!("@{digest}"));
        }
        (Some(tag), None) => name.push_str(&format!(":{tag}")),
        (None, None) => name.push_str(":latest"),
    }
    name
}

/// The references to try for `reference`, in order: itself when qualified; a short name's
/// alias; else the short name under each unqualified-search registry.
pub fn candidates(reference: &str, conf: &RegistriesConf) -> Result<Vec<Reference>, RegistryError> {
    if reference.is_empty() || reference.trim() != reference {
        return Err(RegistryError::InvalidArgument(format!(
            "reference {reference:?} is empty or has spaces"
        )));
    }
    if is_qualified(reference) {
        return Ok(vec![parse(reference)?]);
    }
    // The name without tag or digest is what aliases are keyed by.
    let (name, suffix) = match reference.find(['@']) {
        Some(at) => reference.split_at(at),
        None => match reference.rfind(':') {
            Some(colon) if !reference[colon..].contains('/') => reference.split_at(colon),
            _ => (reference, ""),
        },
    };
    // Reject what could never be a reference before looking anything up.
    parse(&format!("example.invalid/{reference}"))?;
    if let Some(alias) = conf.aliases.get(name) {
        return Ok(vec![parse(&format!("{alias}{suffix}"))?]);
    }
    if conf.unqualified_search_registries.is_empty() {
        return Err(RegistryError::InvalidArgument(format!(
            "short name {reference:?}: no alias for it and no unqualified-search-registries in \
             registries.conf; use a fully qualified reference (registry/name:tag)"
        )));
    }
    conf.unqualified_search_registries
        .iter()
        .map(|registry| parse(&format!("{registry}/{reference}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(search: &[&str], aliases: &[(&str, &str)]) -> RegistriesConf {
        RegistriesConf {
            unqualified_search_registries: search.iter().map(|s| s.to_string()).collect(),
            aliases: aliases
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn names(list: Vec<Reference>) -> Vec<String> {
        list.iter().map(full_name).collect()
    }

    #[test]
    fn a_qualified_reference_is_taken_as_it_is() {
        let found = candidates("127.0.0.1:5000/app:1", &conf(&[], &[])).unwrap();
        assert_eq!(names(found), ["127.0.0.1:5000/app:1"]);
        let found = candidates("localhost/app", &conf(&[], &[])).unwrap();
        assert_eq!(names(found), ["localhost/app:latest"]);
    }

    #[test]
    fn a_short_name_uses_its_alias_before_the_search_registries() {
        let conf = conf(
            &["quay.io", "docker.io"],
            &[("alpine", "docker.io/library/alpine")],
        );
        assert_eq!(
            names(candidates("alpine:3", &conf).unwrap()),
            ["docker.io/library/alpine:3"]
        );
        assert_eq!(
            names(candidates("me/tool", &conf).unwrap()),
            ["quay.io/me/tool:latest", "docker.io/me/tool:latest"]
        );
    }

    #[test]
    fn a_short_name_with_nowhere_to_look_is_invalid_and_says_why() {
        let error = candidates("alpine", &conf(&[], &[])).unwrap_err();
        assert!(error.to_string().contains("unqualified-search-registries"));
    }

    #[test]
    fn malformed_references_are_invalid() {
        for bad in [
            "",
            "UPPER/case:1",
            "a b",
            "127.0.0.1:5000/app:bad tag",
            "x@sha256:zz",
        ] {
            assert!(
                matches!(
                    candidates(bad, &conf(&["docker.io"], &[])),
                    Err(RegistryError::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
    }
}
