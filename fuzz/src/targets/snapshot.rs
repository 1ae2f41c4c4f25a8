//! `snapshot_format::parse_snapshot` (+ `verify_payload_bytes`, `restore_verdict`, the
//! `inspect` renderers): a snapshot file is hostile input, whoever wrote it.
//!
//! Invariants: no panic; a parsed snapshot's segments lie inside guest memory and inside the
//! file, its notes inside the file, its `file_len` is the input's length; and a parsed state
//! written again with `encode_snapshot` (its memory taken from the input) parses back to the
//! same state, and that file's payload hash verifies.

use snapshot_format::{
    encode_snapshot, parse_snapshot, render_json, render_text, restore_verdict, verify_payload_bytes, Limits,
    MemorySegment, PAGE_SIZE,
};

use crate::{signature, Mutator, Outcome, Target};

/// Guest memory the fuzzed files are checked against (the default function size).
const MEMORY: u64 = 256 << 20;
/// Largest memory image rebuilt for the round trip (bigger ones skip it: time, not safety).
const MAX_ROUNDTRIP_MEMORY: u64 = 8 << 20;

pub struct SnapshotTarget;

fn err_sig(e: &snapshot_format::FormatError) -> Vec<u8> {
    // The variant, not its numbers: "Truncated { what: \"note\", ..." -> "Truncated { what: \"note\""
    let d = format!("{e:?}");
    d.split([',', '(']).next().unwrap_or("").as_bytes().to_vec()
}

impl Target for SnapshotTarget {
    fn name(&self) -> &'static str {
        "snapshot"
    }

    fn mutator(&self) -> Mutator {
        let tokens: &[&[u8]] = &[
            b"\x7fELF",
            b"CORE\0\0\0\0",
            b"KMSP\0\0\0\0",
            b"SNAPCALL\0\0\0\0",
            b"\x04\0\0\0",
            b"\x01\0\0\0",
            b"\0\0\0\0\0\0\0\0",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\0\x10\0\0\0\0\0\0",
            b"\0\0\x20\0\0\0\0\0",
            b"/bin/echo-c\0",
        ];
        Mutator { dictionary: tokens.iter().map(|t| t.to_vec()).collect(), max_len: 1 << 20 }
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let limits = Limits::for_memory(MEMORY);
        let snap = match parse_snapshot(input, &limits) {
            Ok(s) => s,
            Err(e) => {
                if e.to_string().is_empty() {
                    return Err(format!("an error with no message: {e:?}"));
                }
                return Ok(signature(&[b"err", &err_sig(&e)]));
            }
        };
        if snap.file_len != input.len() as u64 {
            return Err(format!("file_len {} for a {}-byte input", snap.file_len, input.len()));
        }
        for s in &snap.segments {
            let in_memory = s.guest_addr.checked_add(s.mem_size).is_some_and(|end| end <= MEMORY);
            let in_file = s.file_offset.checked_add(s.file_size).is_some_and(|end| end <= snap.file_len);
            if !in_memory || !in_file || s.file_size > s.mem_size {
                return Err(format!("segment accepted outside memory or file: {s:?}"));
            }
        }
        for n in &snap.notes {
            if n.offset.checked_add(n.record_len).is_none_or(|end| end > snap.file_len) {
                return Err(format!("note outside the file: {} type {} at {}", n.owner, n.note_type, n.offset));
            }
        }
        let verified = verify_payload_bytes(input, &snap);
        let verdict = restore_verdict(&snap);
        let _ = render_text(&snap);
        let _ = render_json(&snap).to_string();

        // Round trip through the writer.
        let total: u64 = snap.segments.iter().map(|s| s.mem_size).sum();
        let aligned = snap.segments.iter().all(|s| s.guest_addr % PAGE_SIZE == 0 && s.mem_size % PAGE_SIZE == 0);
        let mut roundtrip = b"skipped".as_slice();
        if total <= MAX_ROUNDTRIP_MEMORY && aligned {
            let images: Vec<Vec<u8>> = snap
                .segments
                .iter()
                .map(|s| {
                    let mut m = vec![0u8; s.mem_size as usize];
                    let (off, len) = (s.file_offset as usize, s.file_size as usize);
                    m[..len].copy_from_slice(&input[off..off + len]);
                    m
                })
                .collect();
            let memory: Vec<MemorySegment<'_>> = snap
                .segments
                .iter()
                .zip(&images)
                .map(|(s, m)| MemorySegment { guest_addr: s.guest_addr, data: m, prot: s.prot })
                .collect();
            roundtrip = match encode_snapshot(&snap.state, &memory) {
                Ok(bytes) => {
                    let again = parse_snapshot(&bytes, &limits)
                        .map_err(|e| format!("a re-encoded snapshot does not parse: {e}"))?;
                    if again.state != snap.state {
                        return Err(format!(
                            "state differs after a write/parse round trip:\n{:?}\nvs\n{:?}",
                            snap.state, again.state
                        ));
                    }
                    // The writer records a payload hash exactly when the state has an identity.
                    if again.payload_hash.is_some() != snap.state.identity.is_some() {
                        return Err("a re-encoded snapshot's payload hash does not follow its identity".into());
                    }
                    if again.payload_hash.is_some() {
                        verify_payload_bytes(&bytes, &again)
                            .map_err(|e| format!("a re-encoded snapshot's payload does not verify: {e}"))?;
                    }
                    b"ok"
                }
                Err(_) => b"refused",
            };
        }
        Ok(signature(&[
            b"ok",
            format!("{:?}", verified.map_err(|e| err_sig(&e))).as_bytes(),
            format!("{verdict:?}").split('(').next().unwrap_or("").as_bytes(),
            roundtrip,
            &[snap.segments.len().min(8) as u8, snap.notes.len().min(16) as u8],
        ]))
    }
}
