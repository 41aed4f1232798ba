//! REALPATH as OpenSSH's sftp-server answers it (its sftp_realpath, the BSD
//! algorithm): resolve ".", ".." and symlinks component by component, and succeed even
//! when the *last* component does not exist (clients canonicalise upload targets).
//! Symlinks may lead anywhere, outside $HOME included: there is no chroot.

use std::io;

use crate::sys;

const PATH_MAX: usize = 4096;
/// BSD's SYMLOOP_MAX; the check is `symlinks++ > SYMLOOP_MAX`, as in OpenSSH.
const SYMLOOP_MAX: u32 = 32;

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Drops the last component of `resolved` (which ends in '/' unless it is "/"),
/// leaving its trailing '/'.
fn strip_last(resolved: &mut Vec<u8>) {
    if resolved.len() > 1 {
        resolved.pop();
        let cut = resolved
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        resolved.truncate(cut);
    }
}

pub fn realpath(path: &[u8]) -> io::Result<Vec<u8>> {
    if path.is_empty() {
        return Err(err(libc::ENOENT));
    }
    let mut resolved: Vec<u8>;
    let mut left: Vec<u8>;
    if path[0] == b'/' {
        resolved = b"/".to_vec();
        if path.len() == 1 {
            return Ok(resolved);
        }
        left = path[1..].to_vec();
    } else {
        resolved = sys::getcwd()?;
        left = path.to_vec();
    }
    if left.len() >= PATH_MAX || resolved.len() >= PATH_MAX {
        return Err(err(libc::ENAMETOOLONG));
    }
    let mut symlinks = 0u32;
    while !left.is_empty() {
        // Next component, and whether anything follows it.
        let (token, more) = match left.iter().position(|&b| b == b'/') {
            Some(i) => {
                let t = left[..i].to_vec();
                left.drain(..=i);
                (t, true)
            }
            None => (std::mem::take(&mut left), false),
        };
        if resolved.last() != Some(&b'/') {
            if resolved.len() + 1 >= PATH_MAX {
                return Err(err(libc::ENAMETOOLONG));
            }
            resolved.push(b'/');
        }
        match token.as_slice() {
            b"" | b"." => continue,
            b".." => {
                strip_last(&mut resolved);
                continue;
            }
            _ => {}
        }
        resolved.extend_from_slice(&token);
        if resolved.len() >= PATH_MAX {
            return Err(err(libc::ENAMETOOLONG));
        }
        let st = match sys::lstat(&resolved) {
            Ok(st) => st,
            // A missing last component is fine: it names something to be created.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !more => return Ok(resolved),
            Err(e) => return Err(e),
        };
        if st.is_lnk() {
            if symlinks > SYMLOOP_MAX {
                return Err(err(libc::ELOOP));
            }
            symlinks += 1;
            let mut target = sys::readlink(&resolved)?;
            if target.first() == Some(&b'/') {
                resolved.truncate(1);
            } else {
                strip_last(&mut resolved);
            }
            if more {
                if target.last() != Some(&b'/') {
                    target.push(b'/');
                }
                target.extend_from_slice(&left);
            }
            if target.len() >= PATH_MAX {
                return Err(err(libc::ENAMETOOLONG));
            }
            left = target;
        }
    }
    if resolved.len() > 1 && resolved.last() == Some(&b'/') {
        resolved.pop();
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn resolves_dots_links_and_missing_last_components() {
        let dir = std::env::temp_dir().join(format!("sgw-realpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::os::unix::fs::symlink("a/b", dir.join("l")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        let d = std::fs::canonicalize(&dir).unwrap();
        let d = d.as_os_str().as_bytes();
        let rp = |p: &str| realpath(format!("{}/{p}", String::from_utf8_lossy(d)).as_bytes());
        assert_eq!(rp("a/./b/..//b/").unwrap(), [d, b"/a/b"].concat());
        assert_eq!(rp("l/new").unwrap(), [d, b"/a/b/new"].concat());
        assert_eq!(rp("root/etc").unwrap(), b"/etc".to_vec());
        assert_eq!(rp("../../../../../../../..").unwrap(), b"/".to_vec());
        assert_eq!(
            rp("missing/x").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(rp("loop").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(realpath(b"/").unwrap(), b"/".to_vec());
        assert_eq!(
            realpath(b"").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
