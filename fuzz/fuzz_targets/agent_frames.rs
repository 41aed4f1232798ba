//! The agent-forwarding frames (crates/helper/src/agent/wire.rs) as the gateway reads
//! them from the in-workload helper and the helper from the gateway: whatever the
//! bytes, reading ends in frames and then the clean end or one error, never a panic;
//! each frame read re-encodes to exactly the bytes it came from, and carries a payload
//! only as DATA and never more than the cap.
#![no_main]

#[path = "../../crates/helper/src/agent/wire.rs"]
#[allow(dead_code)]
mod wire;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let before = rest;
        match wire::read_frame(&mut rest) {
            Ok(None) => {
                assert!(before.is_empty(), "a clean end with bytes left");
                break;
            }
            Ok(Some((header, payload))) => {
                assert!(payload.len() <= wire::MAX_PAYLOAD);
                assert!(header.kind == wire::Kind::Data || payload.is_empty());
                let consumed = before.len() - rest.len();
                assert_eq!(
                    wire::encode(header.id, header.kind, &payload),
                    &before[..consumed]
                );
            }
            Err(_) => break,
        }
    }
});
