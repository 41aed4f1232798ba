//! Any user name and host name, under any domain: `resolve` returns, never panics, and
//! a target it returns has a well-formed name, and that name routes back to it.
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
    let routing = route::Routing::new(domain.as_deref().or(Some("ssh.example.com")));
    if let Ok(target) = route::resolve(&user, host.as_deref(), &routing) {
        assert!(route::valid_id(&target.name()), "{target:?}");
        assert_eq!(route::route(&target.name()).as_ref(), Ok(&target));
    }
    if let Ok(target) = route::route(&user) {
        assert_eq!(route::route(&target.name()).as_ref(), Ok(&target));
    }
});
