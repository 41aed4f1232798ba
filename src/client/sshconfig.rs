//! The block `ssh-gateway setup` keeps in `~/.ssh/config`: one per domain, between
//! marker lines, appended after whatever the file holds. Pure text in, text out.
//!
//! Removal restores the file byte-exactly: the block is appended as `"\n" + block`
//! to a non-empty file (the newline ends an unterminated last line, or makes a blank
//! line before the block), so removing a block not at the start also removes the one
//! newline before it. A file that did not exist is marked so in the block, and
//! removal tells the caller to delete it again.

const BEGIN: &str = "# >>> ssh-gateway ";
const END: &str = "# <<< ssh-gateway ";
const CREATED: &str = " (this file was created by ssh-gateway setup)";

/// Where one domain's block sits in `text`: the byte range of its lines, including
/// the end marker's newline.
fn find(text: &str, domain: &str) -> Option<(usize, usize)> {
    let begin_line = format!("{BEGIN}{domain}");
    let end_line = format!("{END}{domain}\n");
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if start.is_none()
            && (bare == begin_line
                || bare
                    .strip_prefix(&begin_line)
                    .is_some_and(|rest| rest.starts_with(" (")))
        {
            start = Some(offset);
        } else if let Some(s) = start
            && line == end_line
        {
            return Some((s, offset + line.len()));
        }
        offset += line.len();
    }
    None
}

/// `text` (`None`: the file does not exist) with the block for `domain` holding
/// `body` (lines of options, each ending in a newline): replaced where it is, or
/// appended.
pub fn install(text: Option<&str>, domain: &str, body: &str) -> String {
    let existing = text.unwrap_or("");
    if let Some((start, end)) = find(existing, domain) {
        let created = existing[start..end]
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(CREATED));
        return format!(
            "{}{}{}",
            &existing[..start],
            block(domain, body, created),
            &existing[end..]
        );
    }
    match text {
        None => block(domain, body, true),
        Some("") => block(domain, body, false),
        Some(t) => format!("{t}\n{}", block(domain, body, false)),
    }
}

fn block(domain: &str, body: &str, created: bool) -> String {
    format!(
        "{BEGIN}{domain}{}\n# Written by `ssh-gateway setup`; `ssh-gateway setup --remove --domain {domain}` takes it out.\n{body}{END}{domain}\n",
        if created { CREATED } else { "" }
    )
}

/// What removing a domain's block leaves.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// No block for the domain: leave the file alone.
    Absent,
    /// Write this back.
    Text(String),
    /// setup created the file and nothing else is in it: delete it.
    DeleteFile,
}

pub fn remove(text: &str, domain: &str) -> Removed {
    let Some((start, end)) = find(text, domain) else {
        return Removed::Absent;
    };
    let created = text[start..end]
        .lines()
        .next()
        .is_some_and(|l| l.ends_with(CREATED));
    // The newline install put before the block, when it was not at the start.
    let cut = if start > 0 && text.as_bytes()[start - 1] == b'\n' {
        start - 1
    } else {
        start
    };
    let rest = format!("{}{}", &text[..cut], &text[end..]);
    if created && rest.is_empty() {
        Removed::DeleteFile
    } else {
        Removed::Text(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "Host *.ssh.example.com\n    ProxyCommand ssh-gateway proxy %h %p\n";
    const D: &str = "ssh.example.com";

    #[test]
    fn install_then_remove_restores_every_kind_of_file() {
        for original in [
            "",
            "Host a\n    User b\n",
            "Host a\n    User b",
            "Host a\n\n",
            "# only a comment",
            "\n",
            "Host *\n  ServerAliveInterval 5\n# >>> ssh-gateway other.example.com\nx\n# <<< ssh-gateway other.example.com\n",
        ] {
            let installed = install(Some(original), D, BODY);
            assert!(installed.contains(BODY), "{installed:?}");
            assert!(installed.starts_with(original), "{installed:?}");
            // Twice is the same as once.
            assert_eq!(install(Some(&installed), D, BODY), installed);
            assert_eq!(
                remove(&installed, D),
                Removed::Text(original.to_owned()),
                "{original:?}"
            );
        }
    }

    #[test]
    fn a_created_file_is_deleted_again() {
        let installed = install(None, D, BODY);
        assert_eq!(install(Some(&installed), D, BODY), installed);
        assert_eq!(remove(&installed, D), Removed::DeleteFile);
        // Unless the user added to it meanwhile.
        let edited = format!("{installed}Host mine\n");
        assert_eq!(remove(&edited, D), Removed::Text("Host mine\n".into()));
    }

    #[test]
    fn a_changed_body_replaces_the_block_in_place() {
        let original = "Host a\n    User b\n";
        let installed = format!("{}Host z\n", install(Some(original), D, BODY));
        let changed = install(Some(&installed), D, "Host *.ssh.example.com\n    User x\n");
        assert!(changed.starts_with(original));
        assert!(changed.ends_with("# <<< ssh-gateway ssh.example.com\nHost z\n"));
        assert!(!changed.contains("ProxyCommand"));
        assert_eq!(changed.matches(BEGIN).count(), 1);
    }

    #[test]
    fn domains_are_kept_apart() {
        let one = install(Some("Host a\n"), D, BODY);
        let two = install(Some(&one), "ssh.eu.example.com", BODY);
        assert_eq!(two.matches(BEGIN).count(), 2);
        let Removed::Text(back) = remove(&two, "ssh.eu.example.com") else {
            panic!()
        };
        assert_eq!(back, one);
        assert_eq!(remove(&back, "ssh.eu.example.com"), Removed::Absent);
        // A prefix of a domain is another domain.
        assert_eq!(remove(&one, "example.com"), Removed::Absent);
    }
}
