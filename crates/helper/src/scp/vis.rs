//! BSD strnvis(3) with VIS_NL, which OpenSSH's scp applies to a source name that
//! contains a newline (a raw newline would end the C record early). The encoded name
//! is what the peer receives, so this must match OpenSSH byte for byte.

/// PATH_MAX-sized destination, as scp's `encname[PATH_MAX]`.
const MAX_OUT: usize = 4096 - 1;

/// vis(3) of one byte with flags = VIS_NL. OpenSSH passes `char` (signed), so bytes
/// >= 0x80 are never "visible" and take the meta (`\M-x`, `\M^X`) forms.
fn vis_byte(c: u8, out: &mut Vec<u8>) {
    let visible = c.is_ascii_graphic() || c == b' ' || c == b'\t';
    if visible {
        if c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
        return;
    }
    if c & 0o177 == b' ' {
        out.extend_from_slice(&[
            b'\\',
            b'0' + (c >> 6 & 7),
            b'0' + (c >> 3 & 7),
            b'0' + (c & 7),
        ]);
        return;
    }
    out.push(b'\\');
    let mut c = c;
    if c & 0o200 != 0 {
        c &= 0o177;
        out.push(b'M');
    }
    if c < 0x20 || c == 0x7f {
        out.push(b'^');
        out.push(if c == 0x7f { b'?' } else { c + b'@' });
    } else {
        out.push(b'-');
        out.push(c);
    }
}

/// strnvis(dst, src, PATH_MAX, VIS_NL): encodes until an encoded byte would not fit.
pub fn strnvis(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut one = Vec::with_capacity(4);
    for &c in src {
        one.clear();
        vis_byte(c, &mut one);
        if out.len() + one.len() > MAX_OUT {
            break;
        }
        out.extend_from_slice(&one);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_bsd_vis() {
        assert_eq!(strnvis(b"a\nb"), b"a\\^Jb".to_vec());
        assert_eq!(
            strnvis(b"back\\slash tab\t"),
            b"back\\\\slash tab\t".to_vec()
        );
        assert_eq!(
            strnvis(b"\x7f\xe9\x81\xa0"),
            b"\\^?\\M-i\\M^A\\240".to_vec()
        );
    }
}
