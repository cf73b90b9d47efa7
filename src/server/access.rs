//! Who is on the other end of a connection, and what they may do.
//!
//! Identity comes from the kernel (SO_PEERCRED), never from the request.
//! Roles are ordered reader < operator < admin; root is always admin; a
//! peer matching no `[access]` entry has no role and may only PING and HELP.
//! Group names in the config are resolved through /etc/group, and a peer's
//! groups are its primary gid plus the supplementary groups of its process.

use std::os::fd::AsFd;

use crate::config::AccessSection;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Operator,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Vec<u32>,
}

/// The credentials of the process connected on `fd`.
pub fn peer_of(fd: impl AsFd) -> std::io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(fd)?;
    let pid = cred.pid.as_raw_pid();
    let gid = cred.gid.as_raw();
    let mut groups = supplementary_groups(pid, cred.uid.as_raw(), gid);
    groups.push(gid);
    Ok(Peer {
        uid: cred.uid.as_raw(),
        gid,
        pid,
        groups,
    })
}

/// The supplementary groups of process `pid`, read from `/proc` after the
/// connection was accepted: only when that process still has the uid and
/// gid the kernel gave for the connection (the peer may have exited and its
/// pid been reused by another process, whose groups must not count).
fn supplementary_groups(pid: i32, uid: u32, gid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    groups_if_same(&status, uid, gid)
}

fn groups_if_same(status: &str, uid: u32, gid: u32) -> Vec<u32> {
    let first = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
    };
    if first("Uid:") != Some(uid) || first("Gid:") != Some(gid) {
        return Vec::new();
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Resolve a group name (or number) through /etc/group.
fn gid_of(name: &str, etc_group: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name))
            .then(|| f.nth(1).and_then(|g| g.parse().ok()))
            .flatten()
    })
}

/// The strongest role the peer has.
pub fn role_of(peer: &Peer, access: &AccessSection) -> Option<Role> {
    if peer.uid == 0 {
        return Some(Role::Admin);
    }
    let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let holds = |r: &crate::config::Members| {
        r.uids.contains(&peer.uid)
            || r.groups
                .iter()
                .filter_map(|g| gid_of(g, &etc_group))
                .any(|g| peer.groups.contains(&g))
    };
    [
        (Role::Admin, &access.admin),
        (Role::Operator, &access.operator),
        (Role::Reader, &access.reader),
    ]
    .into_iter()
    .find(|(_, r)| holds(r))
    .map(|(role, _)| role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Members as Entry;

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid: groups.first().copied().unwrap_or(uid),
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn roles_from_uids_and_groups() {
        let access = AccessSection {
            reader: Entry {
                uids: vec![1001],
                groups: vec!["4242".into()],
            },
            operator: Entry {
                uids: vec![1002],
                groups: vec![],
            },
            admin: Entry {
                uids: vec![1003],
                groups: vec![],
            },
        };
        assert_eq!(role_of(&peer(0, &[]), &access), Some(Role::Admin));
        assert_eq!(role_of(&peer(1001, &[]), &access), Some(Role::Reader));
        assert_eq!(role_of(&peer(1002, &[]), &access), Some(Role::Operator));
        assert_eq!(role_of(&peer(1003, &[]), &access), Some(Role::Admin));
        assert_eq!(role_of(&peer(5000, &[4242]), &access), Some(Role::Reader));
        assert_eq!(role_of(&peer(5000, &[5000]), &access), None);
    }

    #[test]
    fn groups_count_only_for_the_same_process() {
        let status = "Name:\tx\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\nGroups:\t27 1500\n";
        assert_eq!(groups_if_same(status, 1001, 1001), vec![27, 1500]);
        assert!(
            groups_if_same(status, 1002, 1001).is_empty(),
            "pid reused by another uid"
        );
        assert!(groups_if_same(status, 1001, 7).is_empty());
        assert!(groups_if_same("", 0, 0).is_empty());
    }

    #[test]
    fn group_names_resolve() {
        let etc = "root:x:0:\nrvm-ops:x:1500:alice,bob\n";
        assert_eq!(gid_of("rvm-ops", etc), Some(1500));
        assert_eq!(gid_of("nobody-here", etc), None);
        assert_eq!(gid_of("77", etc), Some(77));
    }
}
