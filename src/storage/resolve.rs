//! Resolving a path from a container beneath its root, never following a symlink out of it
//! (what `securejoin` does for runc).

use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 40;

/// Joins `unsafe_path` beneath `root` as if `root` were `/`: `..` stops at the root and
/// symlinks are followed relative to it. The result always starts with `root`.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut components = path.components().peekable();
        while let Some(component) = components.next() {
            match component {
                Component::RootDir => resolved.clear(),
                Component::Prefix(_) | Component::CurDir => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate: PathBuf = std::iter::once(root.as_os_str())
                        .chain(resolved.iter().map(|c| c.as_os_str()))
                        .chain(std::iter::once(name))
                        .collect();
                    match std::fs::symlink_metadata(&candidate) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(std::io::Error::other(format!(
                                    "too many symlinks resolving {}",
                                    unsafe_path.display()
                                )));
                            }
                            let target = std::fs::read_link(&candidate)?;
                            let rest: PathBuf = components.by_ref().collect();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved.push(name.to_os_string()),
                    }
                }
            }
        }
    }
    Ok(std::iter::once(root.as_os_str())
        .chain(resolved.iter().map(|c| c.as_os_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dot_dot_stops_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        let got = resolve_in_root(root.path(), Path::new("../../etc/passwd")).unwrap();
        assert_eq!(got, root.path().join("etc/passwd"));
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        symlink("/usr/lib/passwd", root.path().join("etc/passwd")).unwrap();
        let got = resolve_in_root(root.path(), Path::new("/etc/passwd")).unwrap();
        assert_eq!(got, root.path().join("usr/lib/passwd"));
    }

    #[test]
    fn relative_symlinks_cannot_climb_out() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../../etc/shadow", root.path().join("escape")).unwrap();
        let got = resolve_in_root(root.path(), Path::new("escape")).unwrap();
        assert_eq!(got, root.path().join("etc/shadow"));
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        assert!(resolve_in_root(root.path(), Path::new("a")).is_err());
    }
}
