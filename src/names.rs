//! Names users give: containers and artifacts.

/// Names of containers and artifacts: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`,
/// as podman accepts them.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for good in ["a", "web-1", "A.b_c", &"x".repeat(128)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", ".x", "a/b", "..", "a b", &"x".repeat(129), "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
