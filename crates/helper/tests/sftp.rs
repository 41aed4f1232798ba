//! The helper's SFTP server driven by the real OpenSSH `sftp` client (`sftp -D`),
//! compared against OpenSSH's own sftp-server wherever the output is deterministic.

mod support;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use support::*;

/// The same starting state for both servers: a home with files, a subdirectory and
/// a symlink leading outside it.
fn seed_remote(home: &Path) {
    fs::create_dir_all(home.join("sub")).unwrap();
    fs::write(home.join("existing.txt"), b"existing\n").unwrap();
    fs::write(home.join("sub/inner.txt"), b"inner\n").unwrap();
    symlink("../elsewhere", home.join("outside")).unwrap();
}

fn seed_local(local: &Path) {
    fs::create_dir_all(local.join("tree/deeper")).unwrap();
    fs::write(local.join("src.txt"), b"source file\n").unwrap();
    fs::write(local.join("tree/a"), b"a\n").unwrap();
    fs::write(local.join("tree/deeper/b"), vec![7u8; 100_000]).unwrap();
    fs::set_permissions(local.join("tree/a"), fs::Permissions::from_mode(0o600)).unwrap();
}

const BATCH: &str = "\
ls -l
-ls -l missing
put src.txt up.txt
-put nosuchlocal.txt
ls -l up.txt
-get missing.txt
get existing.txt got.txt
-rm missing.txt
mkdir newdir
-mkdir newdir
-rmdir missing
-rmdir sub
rename up.txt renamed.txt
-rename existing.txt renamed.txt
-rename missing.txt x
symlink renamed.txt link
-symlink renamed.txt link
ln renamed.txt hard
chmod 640 renamed.txt
-chmod 640 missing
ls -l
cd sub
pwd
ls -l
cd ..
-cd missing
-cd existing.txt
ls -l outside
ls -l outside/
put -r tree
ls -l tree
get -r tree treecopy
rm hard
rm renamed.txt
-rm sub
ls -la
ls -n
lls -l
";

#[test]
fn batch_output_and_resulting_trees_match_openssh() {
    let base = tempdir();
    let elsewhere = base.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("far.txt"), b"far away\n").unwrap();
    let mut results = Vec::new();
    for (openssh, tag) in [(true, "openssh"), (false, "helper")] {
        let remote = base.path().join(format!("remote-{tag}"));
        let local = base.path().join(format!("local-{tag}"));
        seed_remote(&remote);
        seed_local(&local);
        let out = sftp_batch(&server_cmd(openssh, &remote), &local, BATCH);
        let repl = [(remote.as_path(), "<remote>"), (local.as_path(), "<local>")];
        results.push((
            out.status.code(),
            normalize(&out.stdout, &repl),
            normalize(&out.stderr, &repl),
            snapshot(&remote, false),
            snapshot(&local, false),
        ));
    }
    let (ossh, helper) = (&results[0], &results[1]);
    assert_eq!(ossh.0, Some(0), "openssh run failed: {}", ossh.2);
    assert_eq!(helper.1, ossh.1, "stdout differs");
    assert_eq!(helper.2, ossh.2, "stderr differs");
    assert_eq!(helper.0, ossh.0, "exit status differs");
    assert_eq!(helper.3, ossh.3, "remote trees differ");
    assert_eq!(helper.4, ossh.4, "local trees differ");
    // And the batch did what it says (not just the same thing twice).
    assert!(helper.1.contains("renamed.txt"));
    assert!(helper.2.contains("No such file or directory"));
}

#[test]
fn large_files_round_trip_and_resume() {
    let base = tempdir();
    let remote = base.path().join("remote");
    let local = base.path().join("local");
    fs::create_dir_all(&remote).unwrap();
    fs::create_dir_all(&local).unwrap();
    let size = 100 << 20;
    write_random(&local.join("big.bin"), size, 42);
    let want = sha256_file(&local.join("big.bin"));
    let server = server_cmd(false, &remote);

    let out = sftp_batch(&server, &local, "put big.bin up.bin\nget up.bin down.bin\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&remote.join("up.bin")), want);
    assert_eq!(sha256_file(&local.join("down.bin")), want);

    // Interrupted transfers, resumed: the download is cut locally, the upload
    // remotely, at sizes that are not multiples of the transfer block.
    let cut = |p: &Path, len: u64| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    cut(&local.join("down.bin"), 37_000_001);
    let out = sftp_batch(&server, &local, "reget up.bin down.bin\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cut(&remote.join("up.bin"), 61_234_567);
    let out = sftp_batch(&server, &local, "reput big.bin up.bin\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&local.join("down.bin")), want);
    assert_eq!(sha256_file(&remote.join("up.bin")), want);
}

#[test]
fn names_with_newlines_control_and_non_utf8_bytes_travel_both_ways() {
    let base = tempdir();
    let remote = base.path().join("remote");
    let local = base.path().join("local");
    let odd: [&[u8]; 5] = [
        b"new\nline",
        b"tab\there",
        b"ctrl\x01\x1b[31m",
        b"latin1-\xe9\xff",
        b" leading space",
    ];
    fs::create_dir_all(local.join("odd")).unwrap();
    fs::create_dir_all(&remote).unwrap();
    for (i, name) in odd.iter().enumerate() {
        fs::write(local.join("odd").join(os(name)), format!("file {i}\n")).unwrap();
    }
    fs::create_dir(local.join("odd").join(os(b"dir\nwith\nnewlines"))).unwrap();
    fs::write(
        local
            .join("odd")
            .join(os(b"dir\nwith\nnewlines"))
            .join(os(b"in\nside")),
        b"inside\n",
    )
    .unwrap();
    let server = server_cmd(false, &remote);
    let out = sftp_batch(&server, &local, "put -r odd\nget -r odd back\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = snapshot(&local.join("odd"), false);
    assert_eq!(snapshot(&remote.join("odd"), false), sent);
    assert_eq!(snapshot(&local.join("back"), false), sent);
    assert!(sent.contains_key(&b"new\nline"[..]));
}

#[test]
fn df_reports_the_file_system() {
    let base = tempdir();
    let out = sftp_batch(&server_cmd(false, base.path()), base.path(), "df\ndf -i\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Size") && s.contains("Inodes"), "{s}");
}

#[test]
fn a_sparse_4gib_file_reads_and_writes_past_4gib() {
    use sgw_helper::sftp::packet::*;
    use support::raw::*;
    let base = tempdir();
    let big = base.path().join("sparse");
    let len: u64 = (4 << 30) + 10;
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&big).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(b"TAIL", len - 4).unwrap();
    }
    // The client sees the full 64-bit size.
    let out = sftp_batch(
        &server_cmd(false, base.path()),
        base.path(),
        "ls -l sparse\n",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 4294967306 "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let h = helper();
    let mut c = Raw::spawn(&[h, "sftp-server"], base.path());
    c.init();
    let Reply::Handle(fh) = c.call(FXP_OPEN, &open_body(b"sparse", FXF_READ | FXF_WRITE)) else {
        panic!("open")
    };
    assert_eq!(
        c.call(FXP_READ, &read_body(&fh, len - 4, 100)),
        Reply::Data(b"TAIL".to_vec())
    );
    assert!(matches!(
        c.call(FXP_READ, &read_body(&fh, len, 100)),
        Reply::Status(FX_EOF, _)
    ));
    assert_eq!(
        c.call(FXP_WRITE, &write_body(&fh, (5 << 30) + 1, b"beyond")),
        Reply::Status(FX_OK, "Success".into())
    );
    assert_eq!(
        c.call(FXP_READ, &read_body(&fh, (5 << 30) + 1, 6)),
        Reply::Data(b"beyond".to_vec())
    );
    assert!(matches!(
        c.call(FXP_CLOSE, &path_body(&fh)),
        Reply::Status(FX_OK, _)
    ));
    let (code, _) = c.finish();
    assert_eq!(code, Some(0));
    assert_eq!(fs::metadata(&big).unwrap().len(), (5 << 30) + 7);
}

/// Protocol-level replies compared with OpenSSH's sftp-server: statuses and their
/// messages, longnames, attributes, extension replies.
#[test]
fn raw_replies_match_openssh() {
    use sgw_helper::sftp::packet::*;
    use support::raw::*;
    let base = tempdir();
    let mut transcripts = Vec::new();
    for openssh in [true, false] {
        let home = base.path().join(if openssh { "o" } else { "h" });
        seed_remote(&home);
        fs::create_dir_all(base.path().join("elsewhere")).unwrap();
        fs::set_permissions(home.join("sub"), fs::Permissions::from_mode(0o2750)).unwrap();
        fs::write(home.join(os(b"name\nwith newline")), b"x").unwrap();
        fix_times(&home);
        let argv: Vec<&str> = if openssh {
            vec![OPENSSH_SFTP_SERVER]
        } else {
            vec![helper(), "sftp-server"]
        };
        let mut c = Raw::spawn(&argv, &home);
        let mut t: Vec<String> = Vec::new();
        let mut extra: Vec<String> = Vec::new();
        let ext = c.init();
        t.push(format!("{ext:?}"));
        let mut log = |what: &str, r: Reply| {
            let r = match r {
                Reply::Handle(_) => "handle".to_string(),
                Reply::Name(v) => {
                    let mut v: Vec<_> = v
                        .into_iter()
                        .map(|(n, l, a)| {
                            let l = String::from_utf8_lossy(&l)
                                .replace(&home.display().to_string(), "<home>");
                            (
                                String::from_utf8_lossy(&n)
                                    .replace(&home.display().to_string(), "<home>"),
                                l,
                                a,
                            )
                        })
                        .collect();
                    v.sort();
                    format!("{v:?}")
                }
                r => format!("{r:?}"),
            };
            t.push(format!("{what}: {r}"));
        };
        let Reply::Handle(d) = c.call(FXP_OPENDIR, &path_body(b".")) else {
            panic!("opendir")
        };
        let mut names = Vec::new();
        loop {
            match c.call(FXP_READDIR, &path_body(&d)) {
                Reply::Name(v) => names.extend(v.into_iter().filter(|(n, ..)| n != b"..")),
                other => {
                    log("readdir end", other);
                    break;
                }
            }
        }
        log("readdir", Reply::Name(names));
        log("close dir", c.call(FXP_CLOSE, &path_body(&d)));
        log("close again", c.call(FXP_CLOSE, &path_body(&d)));
        log("stat missing", c.call(FXP_STAT, &path_body(b"missing")));
        log(
            "stat notdir",
            c.call(FXP_STAT, &path_body(b"existing.txt/x")),
        );
        log("lstat link", c.call(FXP_LSTAT, &path_body(b"outside")));
        log("stat file", c.call(FXP_STAT, &path_body(b"existing.txt")));
        log("readlink", c.call(FXP_READLINK, &path_body(b"outside")));
        log(
            "readlink file",
            c.call(FXP_READLINK, &path_body(b"existing.txt")),
        );
        log(
            "realpath",
            c.call(FXP_REALPATH, &path_body(b"sub/../outside/new")),
        );
        log("realpath empty", c.call(FXP_REALPATH, &path_body(b"")));
        log(
            "realpath missing",
            c.call(FXP_REALPATH, &path_body(b"nope/deeper")),
        );
        log(
            "open missing",
            c.call(FXP_OPEN, &open_body(b"missing", FXF_READ)),
        );
        log(
            "open dir write",
            c.call(FXP_OPEN, &open_body(b"sub", FXF_WRITE)),
        );
        log(
            "open excl existing",
            c.call(
                FXP_OPEN,
                &open_body(b"existing.txt", FXF_WRITE | FXF_CREAT | FXF_EXCL),
            ),
        );
        log(
            "read bad handle",
            c.call(FXP_READ, &read_body(b"nope", 0, 10)),
        );
        log("fstat bad handle", c.call(FXP_FSTAT, &path_body(b"nope")));
        log(
            "readdir bad handle",
            c.call(FXP_READDIR, &path_body(b"nope")),
        );
        log(
            "mkdir existing",
            c.call(FXP_MKDIR, &open_body(b"sub", 0)[..]),
        );
        log("rmdir nonempty", c.call(FXP_RMDIR, &path_body(b"sub")));
        log("remove dir", c.call(FXP_REMOVE, &path_body(b"sub")));
        let mut two = path_body(b"existing.txt");
        two.extend_from_slice(&path_body(b"sub/inner.txt"));
        log("rename onto existing", c.call(FXP_RENAME, &two));
        log(
            "posix-rename onto existing",
            c.call(
                FXP_EXTENDED,
                &extended_body("posix-rename@openssh.com", &two),
            ),
        );
        let mut ln = path_body(b"sub/inner.txt");
        ln.extend_from_slice(&path_body(b"hard"));
        log(
            "hardlink",
            c.call(FXP_EXTENDED, &extended_body("hardlink@openssh.com", &ln)),
        );
        log(
            "hardlink again",
            c.call(FXP_EXTENDED, &extended_body("hardlink@openssh.com", &ln)),
        );
        let mut sl = path_body(b"sub/inner.txt");
        sl.extend_from_slice(&path_body(b"soft"));
        log("symlink", c.call(FXP_SYMLINK, &sl));
        log("readlink new", c.call(FXP_READLINK, &path_body(b"soft")));
        log(
            "unknown extension",
            c.call(FXP_EXTENDED, &extended_body("nope@example.com", b"")),
        );
        log(
            "expand ~",
            c.call(
                FXP_EXTENDED,
                &extended_body("expand-path@openssh.com", &path_body(b"~")),
            ),
        );
        log(
            "expand ~/sub",
            c.call(
                FXP_EXTENDED,
                &extended_body("expand-path@openssh.com", &path_body(b"~/sub/")),
            ),
        );
        log(
            "expand ~root",
            c.call(
                FXP_EXTENDED,
                &extended_body("expand-path@openssh.com", &path_body(b"~root/x")),
            ),
        );
        log(
            "expand ~nosuchuser",
            c.call(
                FXP_EXTENDED,
                &extended_body("expand-path@openssh.com", &path_body(b"~nosuchuserxyz/x")),
            ),
        );
        let mut ids = Vec::new();
        put_string(&mut ids, &[0, 0, 0, 0, 0, 0, 0xff, 0xfe]);
        put_string(&mut ids, &[0, 0, 0, 0, 0, 0, 0xff, 0xfe]);
        log(
            "users-groups",
            c.call(
                FXP_EXTENDED,
                &extended_body("users-groups-by-id@openssh.com", &ids),
            ),
        );
        let mut attrs = Vec::new();
        put_u32(&mut attrs, 0x4);
        put_u32(&mut attrs, 0o600);
        let mut ss = path_body(b"hard");
        ss.extend_from_slice(&attrs);
        log("setstat", c.call(FXP_SETSTAT, &ss));
        log("stat after setstat", c.call(FXP_LSTAT, &path_body(b"hard")));
        let mut ls = path_body(b"soft");
        put_u32(&mut ls, 0x1);
        put_u64(&mut ls, 0);
        log(
            "lsetstat size",
            c.call(FXP_EXTENDED, &extended_body("lsetstat@openssh.com", &ls)),
        );
        // copy-data between two handles.
        let Reply::Handle(r) = c.call(FXP_OPEN, &open_body(b"hard", FXF_READ)) else {
            panic!()
        };
        let Reply::Handle(w) = c.call(FXP_OPEN, &open_body(b"copy", FXF_WRITE | FXF_CREAT)) else {
            panic!()
        };
        let mut cd = path_body(&r);
        put_u64(&mut cd, 2);
        put_u64(&mut cd, 0);
        cd.extend_from_slice(&path_body(&w));
        put_u64(&mut cd, 0);
        log(
            "copy-data",
            c.call(FXP_EXTENDED, &extended_body("copy-data", &cd)),
        );
        let mut same = path_body(&r);
        put_u64(&mut same, 0);
        put_u64(&mut same, 0);
        same.extend_from_slice(&path_body(&r));
        put_u64(&mut same, 0);
        log(
            "copy-data same",
            c.call(FXP_EXTENDED, &extended_body("copy-data", &same)),
        );
        log(
            "fsync",
            c.call(
                FXP_EXTENDED,
                &extended_body("fsync@openssh.com", &path_body(&w)),
            ),
        );
        log(
            "fsync bad",
            c.call(
                FXP_EXTENDED,
                &extended_body("fsync@openssh.com", &path_body(b"zz")),
            ),
        );
        log(
            "read past end",
            c.call(FXP_READ, &read_body(&r, 1 << 40, 10)),
        );
        log(
            "read huge offset",
            c.call(FXP_READ, &read_body(&r, u64::MAX, 10)),
        );
        log("read zero", c.call(FXP_READ, &read_body(&r, 0, 0)));
        log("close r", c.call(FXP_CLOSE, &path_body(&r)));
        log("close w", c.call(FXP_CLOSE, &path_body(&w)));
        let Reply::Extended(sv) = c.call(
            FXP_EXTENDED,
            &extended_body("statvfs@openssh.com", &path_body(b".")),
        ) else {
            panic!()
        };
        extra.push(format!("statvfs reply length {}", sv.len()));
        log(
            "statvfs missing",
            c.call(
                FXP_EXTENDED,
                &extended_body("statvfs@openssh.com", &path_body(b"missing")),
            ),
        );
        let Reply::Extended(lim) = c.call(FXP_EXTENDED, &extended_body("limits@openssh.com", b""))
        else {
            panic!()
        };
        extra.push(format!("limits {:?}", &lim[..24]));
        let (code, _) = c.finish();
        t.extend(extra);
        t.push(format!("exit {code:?}"));
        transcripts.push((t, snapshot(&home, false)));
    }
    let (o, h) = (&transcripts[0], &transcripts[1]);
    for (a, b) in o.0.iter().zip(&h.0) {
        assert_eq!(b, a, "helper vs openssh");
    }
    assert_eq!(o.0.len(), h.0.len());
    assert_eq!(h.1, o.1, "trees differ");
}
