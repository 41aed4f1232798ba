//! Fuzzes the SFTP packet parser: framing and request decoding must never panic,
//! whatever the bytes, and a frame never claims more than its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sgw_helper::sftp::packet::{parse, split_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((payload, consumed))) = split_frame(rest) {
        assert!(consumed <= rest.len() && payload.len() + 4 == consumed);
        let _ = parse(payload);
        rest = &rest[consumed..];
    }
    let _ = parse(data);
});
