//! Bounds-checked little-endian decoding of note descriptors, and the matching encoder.
//!
//! Nothing here indexes a slice directly: every read goes through `get()` and returns a
//! [`FormatError`] naming the note and field when the descriptor is too short.

use crate::error::{FormatError, NoteAt};

/// Round `v` up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn round_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// Read cursor over one note descriptor.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    at: NoteAt,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], at: NoteAt) -> Self {
        Self { buf, pos: 0, at }
    }

    /// The note this cursor reads, for error context.
    pub(crate) fn at(&self) -> NoteAt {
        self.at
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(FormatError::NoteTooShort {
                at: self.at,
                field,
                pos: self.pos as u64,
                needed: n as u64,
                len: self.buf.len() as u64,
            }),
        }
    }

    /// Read `n` bytes where `n` comes from the file: checked against `max` first.
    pub(crate) fn bytes_capped(&mut self, n: u64, max: u64, field: &'static str) -> Result<&'a [u8], FormatError> {
        if n > max {
            return Err(FormatError::NoteFieldTooLarge { at: self.at, field, value: n, max });
        }
        let n = usize::try_from(n).map_err(|_| FormatError::NoteFieldTooLarge { at: self.at, field, value: n, max })?;
        self.bytes(n, field)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FormatError> {
        let s = self.bytes(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, FormatError> {
        Ok(i16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn hash(&mut self, field: &'static str) -> Result<[u8; 32], FormatError> {
        self.array(field)
    }

    /// Skip C struct padding.
    pub(crate) fn pad(&mut self, n: usize) -> Result<(), FormatError> {
        self.bytes(n, "padding").map(|_| ())
    }

    /// Skip to the next multiple of `align` (relative to the descriptor start).
    pub(crate) fn align(&mut self, align: usize, field: &'static str) -> Result<(), FormatError> {
        let target = self.pos.div_ceil(align) * align;
        self.bytes(target - self.pos, field).map(|_| ())
    }

    /// A NUL-terminated UTF-8 string of at most `max` bytes (without the NUL); the cursor
    /// ends just past the NUL.
    pub(crate) fn cstr(&mut self, max: u64, field: &'static str) -> Result<String, FormatError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let limit = rest.len().min(usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1));
        let window = rest.get(..limit).unwrap_or(&[]);
        let Some(nul) = window.iter().position(|&b| b == 0) else {
            return Err(FormatError::NoteBadString { at: self.at, field });
        };
        let s = window.get(..nul).unwrap_or(&[]);
        let s = std::str::from_utf8(s).map_err(|_| FormatError::NoteBadString { at: self.at, field })?.to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    /// `len` bytes of UTF-8 (no terminator), `len` capped at `max`.
    pub(crate) fn str_len(&mut self, len: u64, max: u64, field: &'static str) -> Result<String, FormatError> {
        let at = self.at;
        let b = self.bytes_capped(len, max, field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| FormatError::NoteBadString { at, field })
    }

    /// Require the descriptor to be fully consumed.
    pub(crate) fn finish(self) -> Result<(), FormatError> {
        if self.pos != self.buf.len() {
            return Err(FormatError::NoteBadSize {
                at: self.at,
                expected: self.pos as u64,
                actual: self.buf.len() as u64,
            });
        }
        Ok(())
    }

    /// A count read from the file that will be multiplied by `entry_size` bytes: refuse
    /// counts that cannot fit in the remaining descriptor or exceed `max`.
    pub(crate) fn count(
        &self,
        value: u64,
        entry_size: u64,
        max: u64,
        field: &'static str,
    ) -> Result<usize, FormatError> {
        let fits = value.checked_mul(entry_size).is_some_and(|b| b <= self.remaining() as u64);
        if value > max || !fits {
            return Err(FormatError::NoteFieldTooLarge {
                at: self.at,
                field,
                value,
                max: max.min(self.remaining() as u64 / entry_size.max(1)),
            });
        }
        // value <= remaining bytes, so it fits in usize.
        Ok(value as usize)
    }
}

/// Little-endian encoder for note descriptors.
#[derive(Default)]
pub(crate) struct Out {
    pub(crate) buf: Vec<u8>,
}

impl Out {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    /// Zero-pad to a multiple of `align`.
    pub(crate) fn align(&mut self, align: usize) {
        let target = self.buf.len().div_ceil(align) * align;
        self.buf.resize(target, 0);
    }
    /// NUL-terminated string.
    pub(crate) fn cstr(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
