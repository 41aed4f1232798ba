//! The `ls -l`-style "longname" of READDIR entries, formatted exactly as OpenSSH's
//! ls_file() does for the server side, e.g.
//! `drwxr-xr-x    5 markus   markus       1024 Jan 13 18:39 .ssh`.
//! Clients that lack users-groups-by-id@openssh.com print this verbatim.

use crate::sys::{Stat, Tm};

/// OpenSSH formats into a 1024-byte buffer with snprintf: longer lines are cut.
const MAX_LONGNAME: usize = 1023;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// BSD strmode(3): type, nine permission characters and a trailing space (where BSD
/// would put a '+' for ACLs).
pub fn strmode(mode: u32) -> [u8; 11] {
    let mut m = [b'-'; 11];
    m[0] = match mode & libc::S_IFMT {
        libc::S_IFDIR => b'd',
        libc::S_IFCHR => b'c',
        libc::S_IFBLK => b'b',
        libc::S_IFREG => b'-',
        libc::S_IFLNK => b'l',
        libc::S_IFSOCK => b's',
        libc::S_IFIFO => b'p',
        _ => b'?',
    };
    let bit = |b: u32, c: u8| if mode & b != 0 { c } else { b'-' };
    m[1] = bit(0o400, b'r');
    m[2] = bit(0o200, b'w');
    m[4] = bit(0o040, b'r');
    m[5] = bit(0o020, b'w');
    m[7] = bit(0o004, b'r');
    m[8] = bit(0o002, b'w');
    // Execute bits combine with setuid, setgid and sticky: lower case when both.
    let exec = |x: u32, special: u32, set: u8, unset: u8| match (mode & x != 0, mode & special != 0)
    {
        (false, false) => b'-',
        (true, false) => b'x',
        (false, true) => unset,
        (true, true) => set,
    };
    m[3] = exec(0o100, 0o4000, b's', b'S');
    m[6] = exec(0o010, 0o2000, b's', b'S');
    m[9] = exec(0o001, 0o1000, b't', b'T');
    m[10] = b' ';
    m
}

/// The date column: "Mon dd HH:MM" within the last half year, else "Mon dd  YYYY".
pub fn format_time(tm: Option<Tm>, mtime: i64, now: i64) -> String {
    let Some(tm) = tm else {
        return String::new();
    };
    let month = MONTHS.get(tm.mon as usize).copied().unwrap_or("???");
    if now - (365 * 24 * 60 * 60) / 2 < mtime && now >= mtime {
        format!("{month} {:>2} {:02}:{:02}", tm.mday, tm.hour, tm.min)
    } else {
        format!("{month} {:>2}  {}", tm.mday, tm.year)
    }
}

fn pad_right(out: &mut Vec<u8>, s: &[u8], width: usize) {
    out.extend_from_slice(s);
    out.resize(out.len() + width.saturating_sub(s.len()), b' ');
}

/// One longname line. `user`/`group` are the names (None: the numeric id is shown).
pub fn longname(
    name: &[u8],
    st: &Stat,
    user: Option<&[u8]>,
    group: Option<&[u8]>,
    time: &str,
) -> Vec<u8> {
    let uid = st.uid.to_string();
    let gid = st.gid.to_string();
    let user = user.unwrap_or(uid.as_bytes());
    let group = group.unwrap_or(gid.as_bytes());
    let mut out = Vec::with_capacity(64 + name.len());
    out.extend_from_slice(&strmode(st.mode));
    out.extend_from_slice(format!(" {:>3} ", st.nlink).as_bytes());
    pad_right(&mut out, user, 8);
    out.push(b' ');
    pad_right(&mut out, group, 8);
    out.extend_from_slice(format!(" {:>8} {time} ", st.size as u64).as_bytes());
    out.extend_from_slice(name);
    out.truncate(MAX_LONGNAME);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_bsd_strmode() {
        assert_eq!(&strmode(0o040755), b"drwxr-xr-x ");
        assert_eq!(&strmode(0o100644), b"-rw-r--r-- ");
        assert_eq!(&strmode(0o104755), b"-rwsr-xr-x ");
        assert_eq!(&strmode(0o102644), b"-rw-r-Sr-- ");
        assert_eq!(&strmode(0o041777), b"drwxrwxrwt ");
        assert_eq!(&strmode(0o041776), b"drwxrwxrwT ");
        assert_eq!(&strmode(0o120777), b"lrwxrwxrwx ");
        assert_eq!(&strmode(0o010600), b"prw------- ");
        assert_eq!(&strmode(0o000000), b"?--------- ");
    }

    #[test]
    fn lines_match_openssh_layout() {
        let st = Stat {
            mode: 0o040755,
            nlink: 5,
            uid: 1000,
            gid: 1000,
            size: 1024,
            mtime: 1000,
            ..Stat::default()
        };
        let tm = Tm {
            year: 2024,
            mon: 0,
            mday: 3,
            hour: 8,
            min: 5,
        };
        let recent = format_time(Some(tm), 1000, 2000);
        assert_eq!(recent, "Jan  3 08:05");
        let old = format_time(Some(tm), 1000, 1000 + 365 * 86400);
        assert_eq!(old, "Jan  3  2024");
        let future = format_time(Some(tm), 1000, 999);
        assert_eq!(future, "Jan  3  2024");
        assert_eq!(
            longname(b".ssh", &st, Some(b"markus"), Some(b"markus"), &recent),
            b"drwxr-xr-x    5 markus   markus       1024 Jan  3 08:05 .ssh".to_vec()
        );
        assert_eq!(
            longname(b"x", &st, None, Some(b"a-very-long-group"), &recent),
            b"drwxr-xr-x    5 1000     a-very-long-group     1024 Jan  3 08:05 x".to_vec()
        );
        assert_eq!(
            longname(&[b'n'; 2000], &st, None, None, &recent).len(),
            1023
        );
    }
}
