//! The `embedding` text parser (src/pg/types/text.rs, pure functions): parse never panics, and
//! parse -> format -> parse is the identity on what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/pg/types/text.rs"]
#[allow(dead_code)]
mod text;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(values) = text::parse(s, 16000) else {
        return;
    };
    assert!(!values.is_empty());
    assert!(values.iter().all(|v| v.is_finite()));
    // Rust's Display for f32 is the shortest round-trip form, like PostgreSQL's float4out.
    let formatted = text::format(&values, |v, out| out.push_str(&v.to_string()));
    let again = text::parse(&formatted, 16000).unwrap_or_else(|e| panic!("{formatted:?}: {e:?}"));
    assert_eq!(
        values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{formatted}"
    );
    assert_eq!(text::format(&again, |v, out| out.push_str(&v.to_string())), formatted);
});
