//! User and group names from /etc/passwd and /etc/group, parsed here.
//!
//! The helper is linked statically; glibc's getpwuid & co. would dlopen NSS modules
//! that a foreign container does not have (or has for another libc). Files are what
//! containers use, so we read them ourselves and fall back to numeric ids. Like
//! getpwuid, the first matching line wins.

use std::collections::HashMap;

/// The most we read of either file: a database beyond this is not a container's.
const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: Vec<u8>,
    pub uid: u32,
    pub home: Vec<u8>,
}

/// The parsed passwd and group databases.
#[derive(Debug, Default)]
pub struct Names {
    users: Vec<User>,
    by_uid: HashMap<u32, usize>,
    groups: HashMap<u32, Vec<u8>>,
}

/// Parses passwd(5) lines: name:password:uid:gid:gecos:home:shell. Lines that do not
/// parse (comments, NIS "+" entries, garbage) are skipped.
pub fn parse_passwd(text: &[u8]) -> Vec<User> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b':');
            let name = f.next()?;
            let _password = f.next()?;
            let uid = parse_id(f.next()?)?;
            let _gid = f.next()?;
            let _gecos = f.next()?;
            let home = f.next()?;
            if name.is_empty() || name.starts_with(b"+") || name.starts_with(b"-") {
                return None;
            }
            Some(User {
                name: name.to_vec(),
                uid,
                home: home.to_vec(),
            })
        })
        .collect()
}

/// Parses group(5) lines: name:password:gid:members, into (gid, name).
pub fn parse_group(text: &[u8]) -> Vec<(u32, Vec<u8>)> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b':');
            let name = f.next()?;
            let _password = f.next()?;
            let gid = parse_id(f.next()?)?;
            if name.is_empty() || name.starts_with(b"+") || name.starts_with(b"-") {
                return None;
            }
            Some((gid, name.to_vec()))
        })
        .collect()
}

fn parse_id(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn read_capped(path: &str) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_FILE).read_to_end(&mut buf);
    }
    buf
}

impl Names {
    pub fn from_texts(passwd: &[u8], group: &[u8]) -> Names {
        let users = parse_passwd(passwd);
        let mut by_uid = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            by_uid.entry(u.uid).or_insert(i);
        }
        let mut groups = HashMap::new();
        for (gid, name) in parse_group(group) {
            groups.entry(gid).or_insert(name);
        }
        Names {
            users,
            by_uid,
            groups,
        }
    }

    /// Reads the system's databases (missing files mean no names).
    pub fn load() -> Names {
        Names::from_texts(&read_capped("/etc/passwd"), &read_capped("/etc/group"))
    }

    pub fn user(&self, uid: u32) -> Option<&User> {
        self.by_uid.get(&uid).and_then(|&i| self.users.get(i))
    }

    pub fn user_name(&self, uid: u32) -> Option<&[u8]> {
        self.user(uid).map(|u| u.name.as_slice())
    }

    pub fn group_name(&self, gid: u32) -> Option<&[u8]> {
        self.groups.get(&gid).map(Vec::as_slice)
    }

    pub fn user_by_name(&self, name: &[u8]) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_entry_wins_and_garbage_is_skipped() {
        let n = Names::from_texts(
            b"root:x:0:0:root:/root:/bin/sh\n# comment\n+nis::::::\nbad:x:notanumber:0::/:/\n\
              dup:x:0:0::/dup:/bin/sh\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/bash",
            b"root:x:0:\nwheel:x:10:alice,bob\nbroken\n",
        );
        assert_eq!(n.user_name(0), Some(&b"root"[..]));
        assert_eq!(n.user_name(1000), Some(&b"alice"[..]));
        assert_eq!(n.user_name(5), None);
        assert_eq!(n.group_name(10), Some(&b"wheel"[..]));
        assert_eq!(n.group_name(11), None);
        assert_eq!(
            n.user_by_name(b"alice").map(|u| u.home.clone()),
            Some(b"/home/alice".to_vec())
        );
        assert!(n.user_by_name(b"bad").is_none());
    }
}
