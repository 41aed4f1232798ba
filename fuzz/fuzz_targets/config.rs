//! The configuration file and its `SSH_GATEWAY__…` environment overrides, any
//! bytes: `Config::from_toml` returns without panicking, and a configuration it
//! accepts is one the gateway can start from: the limits and networks it derives at
//! start are valid too, and reading the same input again gives the same answer.
//!
//! Input: the TOML text, then after a NUL, override lines `NAME=value` (NAME without
//! the prefix, which the target adds).
#![no_main]

#[path = "../../src/conn/limits.rs"]
#[allow(dead_code)]
mod limits;

/// `crate::conn::admission`, where config.rs finds the limits in the gateway.
mod conn {
    pub mod admission {
        pub use crate::limits::{AdmissionLimits, IpNet};
    }
}

#[path = "../../src/config.rs"]
#[allow(dead_code)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let env: Vec<(String, String)> = parts
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("{}{k}", config::ENV_PREFIX), v.to_owned()))
        .collect();
    let read = || config::Config::from_toml(&text, "fuzz.toml", env.clone().into_iter());
    let first = read();
    let again = read();
    assert_eq!(
        first
            .as_ref()
            .map(|c| format!("{c:?}"))
            .map_err(ToString::to_string),
        again
            .as_ref()
            .map(|c| format!("{c:?}"))
            .map_err(ToString::to_string)
    );
    if let Ok(config) = first {
        let limits = config.admission.limits(config.ssh.max_connections);
        assert!(limits.is_ok(), "{limits:?}");
        let sources = config.ssh.proxy_sources();
        assert!(sources.is_ok(), "{sources:?}");
    }
});
