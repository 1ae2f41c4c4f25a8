//! Whole-file parser: any bytes must give Ok or a FormatError, never a panic; whatever
//! parses must render, and re-encoding its state must read back as the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_format::{encode_snapshot, parse_snapshot, render_json, render_text, verify_payload_bytes, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_note_bytes: 1 << 20, ..Limits::default() };
    let Ok(snap) = parse_snapshot(data, &limits) else { return };
    let _ = verify_payload_bytes(data, &snap);
    let _ = render_text(&snap);
    let _ = render_json(&snap);
    if let Ok(bytes) = encode_snapshot(&snap.state, &[]) {
        let again = parse_snapshot(&bytes, &Limits::default()).expect("re-encoded state does not parse");
        assert_eq!(again.state, snap.state, "state changed through encode/parse");
    }
});
