//! Front preludes, any bytes: read as a PROXY protocol header (v1 or v2) and as an
//! HTTP CONNECT prelude, the parsers return without panicking and never read past
//! their bounds; a CONNECT prelude that tunnels names a host in the routable form,
//! and a refusal is a 4xx.
#![no_main]

#[path = "../../src/route.rs"]
#[allow(dead_code)]
mod route;

#[path = "../../src/conn/proxy_protocol.rs"]
#[allow(dead_code)]
mod proxy_protocol;

#[path = "../../src/conn/connect.rs"]
#[allow(dead_code)]
mod connect;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;

/// Runs a future over an in-memory reader, which never has to wait.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// The longest PROXY header: the v2 signature and fixed part, and its 1024-byte cap.
const PROXY_MAX: usize = 16 + 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let _ = now(proxy_protocol::read_header(&mut rest));
    assert!(data.len() - rest.len() <= PROXY_MAX);

    let mut rest = data;
    if let Ok(prelude) = now(connect::read_prelude(&mut rest, Vec::new())) {
        assert!(prelude.len() <= connect::MAX_PRELUDE);
    }
    let routing = route::Routing::new(Some("ssh.example.com"));
    match connect::parse(data, &routing) {
        connect::Prelude::Tunnel(host) => {
            assert!(!host.is_empty() && !host.contains(':'), "{host:?}");
            assert_eq!(host, host.to_ascii_lowercase());
        }
        connect::Prelude::Refuse(code, _) => assert!((400..500).contains(&code), "{code}"),
    }
});
