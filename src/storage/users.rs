//! `User` looked up inside the container's rootfs (`/etc/passwd`, `/etc/group`), as runc's
//! `user.GetExecUserPath` does.

use std::path::Path;

use super::resolve::resolve_in_root;

/// The process identity a `User` spec value resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("no user {0:?} in the container's /etc/passwd")]
    NoSuchUser(String),
    #[error("no group {0:?} in the container's /etc/group")]
    NoSuchGroup(String),
}

fn read_in_root(root: &Path, path: &str) -> String {
    resolve_in_root(root, Path::new(path))
        .and_then(std::fs::read_to_string)
        .unwrap_or_default()
}

/// Resolves `name`, `uid`, `name:group` or `uid:gid` (empty = root).
pub fn lookup(root: &Path, spec: &str) -> Result<ExecUser, UserError> {
    let passwd = read_in_root(root, "/etc/passwd");
    let group = read_in_root(root, "/etc/group");
    lookup_in(&passwd, &group, spec)
}

fn lookup_in(passwd: &str, group: &str, spec: &str) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries = passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7).then(|| {
            (
                fields[0],
                fields[2].parse::<u32>().ok(),
                fields[3].parse::<u32>().ok(),
                fields[5],
            )
        })
    });
    let found = entries
        .filter_map(|(name, uid, gid, home)| Some((name, uid?, gid?, home)))
        .find(|(name, uid, _, _)| {
            *name == user_part || user_part.parse::<u32>().ok() == Some(*uid)
        });
    let (user_name, uid, mut gid, home) = match found {
        Some((name, uid, gid, home)) => (name.to_string(), uid, gid, home.to_string()),
        // A numeric uid need not exist in passwd (runc and podman accept it).
        None => match user_part.parse::<u32>() {
            Ok(uid) => (String::new(), uid, uid, "/".to_string()),
            Err(_) => return Err(UserError::NoSuchUser(user_part.to_string())),
        },
    };
    let groups: Vec<(String, u32, Vec<String>)> = group
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4).then(|| {
                let members = fields[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                fields[2]
                    .parse::<u32>()
                    .ok()
                    .map(|gid| (fields[0].to_string(), gid, members))
            })?
        })
        .collect();
    if let Some(wanted) = group_part {
        gid = match groups.iter().find(|(name, _, _)| name == wanted) {
            Some((_, gid, _)) => *gid,
            None => wanted
                .parse::<u32>()
                .map_err(|_| UserError::NoSuchGroup(wanted.to_string()))?,
        };
    }
    let additional_gids = if user_name.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .filter(|(_, group_gid, members)| *group_gid != gid && members.contains(&user_name))
            .map(|(_, group_gid, _)| *group_gid)
            .collect()
    };
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www\nnogroup:x:65534:\n";

    #[test]
    fn empty_means_root() {
        let user = lookup_in(PASSWD, GROUP, "").unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn names_resolve_with_their_supplementary_groups() {
        let user = lookup_in(PASSWD, GROUP, "www").unwrap();
        assert_eq!((user.uid, user.gid), (33, 33));
        assert_eq!(user.additional_gids, vec![50]);
    }

    #[test]
    fn numeric_ids_need_no_passwd_entry() {
        let user = lookup_in(PASSWD, GROUP, "1234:5678").unwrap();
        assert_eq!((user.uid, user.gid), (1234, 5678));
        let user = lookup_in(PASSWD, GROUP, "nobody:staff").unwrap();
        assert_eq!((user.uid, user.gid), (65534, 50));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            lookup_in(PASSWD, GROUP, "alice"),
            Err(UserError::NoSuchUser("alice".into()))
        );
        assert_eq!(
            lookup_in(PASSWD, GROUP, "root:wheel"),
            Err(UserError::NoSuchGroup("wheel".into()))
        );
    }
}
