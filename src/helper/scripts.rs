//! The two POSIX sh scripts the gateway runs in a workload before it uses the helper,
//! and what they print. Both run through the channel's own backend (the Kubernetes
//! exec API, or a local process), so they need nothing but `/bin/sh` and the usual
//! utilities (`id`, `uname`, `mkdir`, `chmod`, `head`, `wc`, `tr`, `mv`, `ls`), which
//! busybox provides as well as coreutils.
//!
//! Where a copy may live, in order: `$HOME/.cache/ssh-gateway`, the configured
//! directory, `/tmp/ssh-gateway-<uid>`, `/dev/shm/ssh-gateway-<uid>`. A copy sits at
//! `<place>/<first 16 hex of its SHA-256>/helper`.
//!
//! Why a copy found there can be trusted enough to run:
//! - it only ever appears under its final name by `mv` from a temporary name in the same
//!   directory, after its size and its `version` answer were checked, so it is never
//!   half-written;
//! - the directory is named by content, so a different gateway build never picks it up;
//! - the place and its hash directory must be owned by the container user and not
//!   writable by group or others (so another account in a shared `/tmp` cannot plant
//!   one), and the file must be owned by that user;
//! - whoever could still replace it *is* that container user, who can already run
//!   anything with exactly the rights the helper has. The members of a sandbox share
//!   that user (and its `~/.bashrc`), which makes it the helper's trust boundary; a
//!   hash check inside the container would not add to that.
//!
//! Before use the probe runs the copy's `version` and compares the line, which also
//! proves the place is still executable.

use crate::backend::{SFTP_SERVER_PATHS, sh_quote as quote};

/// Candidate places, as sh words (expanded in the workload). Tests substitute their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places(Vec<String>);

impl Places {
    /// The standard order, with the operator's directory after `$HOME/.cache`.
    pub fn standard(configured: Option<&str>) -> Self {
        let mut words = vec!["\"$HOME/.cache/ssh-gateway\"".to_owned()];
        if let Some(dir) = configured {
            words.push(quote(dir));
        }
        words.push("\"/tmp/ssh-gateway-$u\"".to_owned());
        words.push("\"/dev/shm/ssh-gateway-$u\"".to_owned());
        Places(words)
    }

    #[cfg(test)]
    pub fn literal(dirs: &[&str]) -> Self {
        Places(dirs.iter().map(|d| quote(d)).collect())
    }

    fn words(&self) -> String {
        self.0.join(" ")
    }
}

/// Shared by both scripts: the helper's identity, the user id, and the test a place
/// must pass (see the module comment).
fn prelude(hash_dir: &str, version_line: &str) -> String {
    format!(
        "umask 077\n\
         h={h}; want={want}\n\
         u=$(id -u 2>/dev/null) || u=unknown\n\
         private() {{\n\
         \x20 [ -d \"$1\" ] && [ ! -L \"$1\" ] && [ -O \"$1\" ] || return 1\n\
         \x20 case \"$(ls -ld \"$1\" 2>/dev/null)\" in d????-??-*) return 0 ;; esac\n\
         \x20 return 1\n\
         }}\n",
        h = quote(hash_dir),
        want = quote(version_line),
    )
}

/// Prints what the gateway needs to decide how to serve scp, sftp and rsync here.
pub fn probe(hash_dir: &str, version_line: &str, places: &Places) -> String {
    let sftp_paths = SFTP_SERVER_PATHS.join(" ");
    format!(
        "{prelude}\
         echo \"arch=$(uname -m 2>/dev/null)\"\n\
         for p in {sftp_paths}; do\n\
         \x20 if [ -f \"$p\" ] && [ -x \"$p\" ]; then echo \"sftp-server=$p\"; break; fi\n\
         done\n\
         for t in scp rsync; do\n\
         \x20 p=$(command -v $t 2>/dev/null) && [ -f \"$p\" ] && [ -x \"$p\" ] && echo \"$t=yes\"\n\
         done\n\
         for d in {places}; do\n\
         \x20 f=\"$d/$h/helper\"\n\
         \x20 if private \"$d\" && private \"$d/$h\" && [ -f \"$f\" ] && [ ! -L \"$f\" ] && [ -O \"$f\" ] \\\n\
         \x20   && [ -x \"$f\" ] && [ \"$(\"$f\" version 2>/dev/null)\" = \"$want\" ]; then\n\
         \x20   echo \"helper=$f\"; break\n\
         \x20 fi\n\
         done\n\
         exit 0\n",
        prelude = prelude(hash_dir, version_line),
        places = places.words(),
    )
}

/// Reads exactly `size` bytes of stdin into the first place that is private, writable
/// and executable, checks the copy, and renames it into place.
pub fn place(hash_dir: &str, version_line: &str, size: usize, places: &Places) -> String {
    format!(
        "{prelude}\
         size={size}; tried=\n\
         note() {{ tried=\"$tried\ntried=$1: $2\"; }}\n\
         for d in {places}; do\n\
         \x20 dir=\"$d/$h\"\n\
         \x20 if ! mkdir -p \"$dir\" 2>/dev/null; then note \"$d\" \"cannot create it (read-only file system or no permission)\"; continue; fi\n\
         \x20 if ! private \"$d\" || ! private \"$dir\"; then note \"$d\" \"not private to this user (owned by another user or writable by others)\"; continue; fi\n\
         \x20 t=\"$dir/.probe.$$\"\n\
         \x20 if ! printf '#!/bin/sh\\nexit 0\\n' > \"$t\" 2>/dev/null; then note \"$d\" \"cannot write files there\"; continue; fi\n\
         \x20 chmod 700 \"$t\" 2>/dev/null\n\
         \x20 if ! \"$t\" 2>/dev/null; then rm -f \"$t\"; note \"$d\" \"cannot run programs there (mounted noexec)\"; continue; fi\n\
         \x20 rm -f \"$t\"\n\
         \x20 t=\"$dir/.helper.$$\"\n\
         \x20 head -c \"$size\" > \"$t\" 2>/dev/null\n\
         \x20 n=$(wc -c < \"$t\" 2>/dev/null | tr -d ' ')\n\
         \x20 if [ \"$n\" != \"$size\" ]; then rm -f \"$t\"; echo \"error=$d: received ${{n:-0}} of $size bytes (disk full, or the transfer was cut)\"; exit 3; fi\n\
         \x20 chmod 700 \"$t\"\n\
         \x20 if [ \"$(\"$t\" version 2>/dev/null)\" != \"$want\" ]; then rm -f \"$t\"; echo \"error=$d: the copied helper does not run here\"; exit 3; fi\n\
         \x20 if ! mv -f \"$t\" \"$dir/helper\"; then rm -f \"$t\"; echo \"error=$d: cannot rename the copy into place\"; exit 3; fi\n\
         \x20 echo \"helper=$dir/helper\"; exit 0\n\
         done\n\
         printf '%s\\n' \"$tried\"\n\
         exit 4\n",
        prelude = prelude(hash_dir, version_line),
        places = places.words(),
    )
}

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `uname -m`.
    pub arch: String,
    /// The image's own sftp-server, if any.
    pub sftp_server: Option<String>,
    pub scp: bool,
    pub rsync: bool,
    /// A verified copy of this gateway's helper.
    pub helper: Option<String>,
}

impl Facts {
    pub fn parse(stdout: &str) -> Facts {
        let mut facts = Facts::default();
        for line in stdout.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.to_owned();
            match key {
                "arch" => facts.arch = value,
                "sftp-server" => facts.sftp_server = Some(value),
                "scp" => facts.scp = true,
                "rsync" => facts.rsync = true,
                "helper" => facts.helper = Some(value),
                _ => {}
            }
        }
        facts
    }
}

/// How a placement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    At(String),
    /// A place was chosen but the copy failed there.
    Failed(String),
    /// No place would do; one reason per place tried.
    NoPlace(Vec<String>),
}

impl Placed {
    pub fn parse(stdout: &str) -> Placed {
        let mut tried = Vec::new();
        for line in stdout.lines() {
            if let Some(path) = line.strip_prefix("helper=") {
                return Placed::At(path.to_owned());
            }
            if let Some(error) = line.strip_prefix("error=") {
                return Placed::Failed(error.to_owned());
            }
            if let Some(reason) = line.strip_prefix("tried=") {
                tried.push(reason.to_owned());
            }
        }
        Placed::NoPlace(tried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    const WANT: &str = "ssh-gateway-helper 1 test";

    /// A stand-in with the helper's `version` contract, so the scripts' logic is
    /// tested without the real binary (the end-to-end tests use that).
    fn stand_in() -> Vec<u8> {
        format!("#!/bin/sh\n[ \"$1\" = version ] && echo '{WANT}'\n").into_bytes()
    }

    /// The shells scripts meet in images: dash (Debian's sh) and, if installed,
    /// busybox's ash.
    fn shells() -> Vec<Vec<&'static str>> {
        let mut shells = vec![vec!["/bin/sh"]];
        if std::path::Path::new("/bin/busybox").exists() {
            shells.push(vec!["/bin/busybox", "sh"]);
        }
        shells
    }

    fn run(shell: &[&str], home: &std::path::Path, script: &str, input: &[u8]) -> String {
        let mut child = Command::new(shell[0])
            .args(&shell[1..])
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn places_once_then_the_probe_finds_the_copy() {
        for shell in shells() {
            let home = tempfile::tempdir().unwrap();
            let places =
                Places::literal(&[&format!("{}/.cache/ssh-gateway", home.path().display())]);
            let facts = Facts::parse(&run(
                &shell,
                home.path(),
                &probe("abcd", WANT, &places),
                b"",
            ));
            assert_eq!(facts.helper, None, "{shell:?}");
            assert_eq!(facts.arch, std::env::consts::ARCH);
            let bytes = stand_in();
            let out = run(
                &shell,
                home.path(),
                &place("abcd", WANT, bytes.len(), &places),
                &bytes,
            );
            let expected = format!("{}/.cache/ssh-gateway/abcd/helper", home.path().display());
            assert_eq!(
                Placed::parse(&out),
                Placed::At(expected.clone()),
                "{shell:?}: {out}"
            );
            let mode = std::fs::metadata(&expected).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            let dir_mode = std::fs::metadata(home.path().join(".cache/ssh-gateway/abcd")).unwrap();
            assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
            let facts = Facts::parse(&run(
                &shell,
                home.path(),
                &probe("abcd", WANT, &places),
                b"",
            ));
            assert_eq!(facts.helper, Some(expected), "{shell:?}");
            // No temporaries left behind.
            let names: Vec<_> = std::fs::read_dir(home.path().join(".cache/ssh-gateway/abcd"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("helper")]);
        }
    }

    #[test]
    fn a_copy_that_answers_wrongly_is_not_used_and_is_replaced() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("p/abcd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(
            home.path().join("p"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(
            dir.join("helper"),
            "#!/bin/sh\necho 'ssh-gateway-helper 0 old'\n",
        )
        .unwrap();
        std::fs::set_permissions(dir.join("helper"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let places = Places::literal(&[&home.path().join("p").display().to_string()]);
        let facts = Facts::parse(&run(
            &["/bin/sh"],
            home.path(),
            &probe("abcd", WANT, &places),
            b"",
        ));
        assert_eq!(facts.helper, None);
        let bytes = stand_in();
        let out = run(
            &["/bin/sh"],
            home.path(),
            &place("abcd", WANT, bytes.len(), &places),
            &bytes,
        );
        assert!(matches!(Placed::parse(&out), Placed::At(_)), "{out}");
        assert_eq!(std::fs::read(dir.join("helper")).unwrap(), bytes);
    }

    #[test]
    fn a_cut_transfer_leaves_nothing_runnable() {
        let home = tempfile::tempdir().unwrap();
        let places = Places::literal(&[&home.path().join("p").display().to_string()]);
        let bytes = stand_in();
        let out = run(
            &["/bin/sh"],
            home.path(),
            &place("abcd", WANT, bytes.len() + 100, &places),
            &bytes,
        );
        match Placed::parse(&out) {
            Placed::Failed(reason) => assert!(reason.contains("received"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!home.path().join("p/abcd/helper").exists());
        let facts = Facts::parse(&run(
            &["/bin/sh"],
            home.path(),
            &probe("abcd", WANT, &places),
            b"",
        ));
        assert_eq!(facts.helper, None);
    }

    #[test]
    fn places_that_will_not_do_are_each_explained_and_the_next_is_tried() {
        let home = tempfile::tempdir().unwrap();
        // Not a directory: cannot be created.
        let file = home.path().join("file");
        std::fs::write(&file, "").unwrap();
        // Someone else's: another account could have planted a copy.
        let foreign = home.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }
        // Writable by others.
        let open = home.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let good = home.path().join("good");
        let dirs = [
            file.display().to_string(),
            foreign.display().to_string(),
            open.display().to_string(),
        ];
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let bytes = stand_in();
        let out = run(
            &["/bin/sh"],
            home.path(),
            &place("abcd", WANT, bytes.len(), &Places::literal(&refs)),
            &bytes,
        );
        match Placed::parse(&out) {
            Placed::NoPlace(tried) => {
                assert_eq!(tried.len(), 3, "{tried:?}");
                assert!(tried[0].contains("cannot create it"), "{tried:?}");
                if is_root {
                    assert!(tried[1].contains("not private"), "{tried:?}");
                }
                assert!(tried[2].contains("not private"), "{tried:?}");
            }
            other => panic!("{other:?}"),
        }
        let mut with_good = refs.clone();
        let good_str = good.display().to_string();
        with_good.push(&good_str);
        let out = run(
            &["/bin/sh"],
            home.path(),
            &place("abcd", WANT, bytes.len(), &Places::literal(&with_good)),
            &bytes,
        );
        assert_eq!(
            Placed::parse(&out),
            Placed::At(format!("{good_str}/abcd/helper"))
        );
    }

    #[test]
    fn the_standard_places_quote_the_configured_one() {
        let p = Places::standard(Some("/opt/it's here"));
        assert_eq!(
            p.words(),
            "\"$HOME/.cache/ssh-gateway\" '/opt/it'\\''s here' \"/tmp/ssh-gateway-$u\" \"/dev/shm/ssh-gateway-$u\""
        );
    }
}
