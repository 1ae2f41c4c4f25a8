//! One KM/CORE note descriptor: the first byte picks the note type, the rest is the
//! descriptor. Parsing never panics; a parsed note re-encodes to something that parses back
//! to the same note.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_format::km::*;
use snapshot_format::{KmNote, Limits, NoteAt};

const TYPES: [(&str, u32); 16] = [
    (CORE_OWNER, NT_PRSTATUS),
    (CORE_OWNER, NT_AUXV),
    (CORE_OWNER, NT_FILE),
    (KM_OWNER, NT_KM_MONITOR),
    (KM_OWNER, NT_KM_VCPU),
    (KM_OWNER, NT_KM_GUEST),
    (KM_OWNER, NT_KM_GUESTV),
    (KM_OWNER, NT_KM_DYNLINKER),
    (KM_OWNER, NT_KM_DYNLINKERV),
    (KM_OWNER, NT_KM_DUP_DATA),
    (KM_OWNER, NT_KM_FILE),
    (KM_OWNER, NT_KM_EVENTFD),
    (KM_OWNER, NT_KM_SOCKET),
    (KM_OWNER, NT_KM_EPOLLFD),
    (KM_OWNER, NT_KM_SIGHAND),
    (KM_OWNER, NT_KM_IOCONTEXTS),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, desc)) = data.split_first() else { return };
    let (owner, t) = TYPES[usize::from(sel) % TYPES.len()];
    let at = NoteAt { note: "fuzz", index: 0, offset: 0 };
    let limits = Limits::default();
    if let Ok(Some(note)) = KmNote::parse(owner, t, desc, at, &limits) {
        assert_eq!(note.note_type(), t);
        let enc = note.encode();
        let back = KmNote::parse(owner, t, &enc, at, &limits).expect("re-encoded note fails to parse");
        assert_eq!(back, Some(note));
    }
});
