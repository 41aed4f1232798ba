//! Any user name and host name, under any domain, with and without remotes: `resolve`
//! returns, never panics, and a target it returns has a well-formed name, that name
//! routes back to it, and a remote it returns is one of those configured.
#![no_main]

#[path = "../../src/route.rs"]
#[allow(dead_code)]
mod route;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // user \0 host \0 domain
    let mut parts = data.split(|b| *b == 0);
    let user = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let host = parts.next().map(String::from_utf8_lossy);
    let domain = parts.next().map(String::from_utf8_lossy);
    let plain = route::Routing::new(domain.as_deref().or(Some("ssh.example.com")));
    let remotes = plain.clone().with_remotes(&["a", "gpu-2"]);
    for routing in [&plain, &remotes] {
        if let Ok(found) = route::resolve(&user, host.as_deref(), routing) {
            let target = &found.target;
            assert!(route::valid_id(&target.name()), "{target:?}");
            assert_eq!(route::route(&target.name()).as_ref(), Ok(target));
            if let Some(remote) = &found.remote {
                assert!(routing.remotes.contains(remote), "{found:?}");
            }
            let key = found.key();
            assert_eq!(
                route::split_key(&key),
                (found.remote.as_deref(), &*target.name())
            );
        }
    }
    if let Ok(target) = route::route(&user) {
        assert_eq!(route::route(&target.name()).as_ref(), Ok(&target));
    }
});
