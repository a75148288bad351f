//! The `embedding` binary receive checks (src/pg/types/text.rs `parse_binary`, pure): never panics, never
//! allocates more than the dimension limit allows, and what it accepts is exactly a valid header followed
//! by finite big-endian float4s that re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/pg/types/text.rs"]
#[allow(dead_code)]
mod text;

fuzz_target!(|data: &[u8]| {
    let Ok((values, used)) = text::parse_binary(data, 16000) else {
        return;
    };
    assert!(!values.is_empty() && values.len() <= 16000);
    assert_eq!(used, 4 + 4 * values.len());
    assert!(values.iter().all(|v| v.is_finite()));
    let mut again = Vec::with_capacity(used);
    again.extend_from_slice(&(values.len() as i16).to_be_bytes());
    again.extend_from_slice(&[0, 0]);
    for v in &values {
        again.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(&again[..], &data[..used]);
});
