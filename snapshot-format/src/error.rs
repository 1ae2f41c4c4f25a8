//! The one error type of this crate: every way a snapshot can be refused, with context.

use std::path::PathBuf;

/// Which note a [`FormatError`] is about: its name, its index in the PT_NOTE segment
/// (0-based, in file order) and the file offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteAt {
    /// Symbolic name of the note type, e.g. `"NT_KM_FILE"`.
    pub note: &'static str,
    /// Index of the note in the PT_NOTE segment.
    pub index: usize,
    /// File offset of the note header.
    pub offset: u64,
}

impl std::fmt::Display for NoteAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (note #{} at file offset {:#x})", self.note, self.index, self.offset)
    }
}

/// Why a snapshot could not be read, written or verified.
///
/// One variant per failure; every variant names the segment, note or offset concerned.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An I/O operation on the snapshot file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"read"`, `"write"`, `"rename"` ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    // ---- ELF header ----
    /// The file is shorter than the structure that must be read at `offset`.
    #[error("file truncated: {what} needs bytes {offset:#x}..{end:#x} but the file is {file_len:#x} bytes")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Start of the structure.
        offset: u64,
        /// End of the structure (exclusive).
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The first four bytes are not `\x7fELF`.
    #[error("not an ELF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// `EI_CLASS` is not ELFCLASS64.
    #[error("wrong ELF class {0} (want 2, ELFCLASS64)")]
    WrongClass(u8),
    /// `EI_DATA` is not little-endian.
    #[error("wrong ELF data encoding {0} (want 1, little-endian)")]
    WrongEndian(u8),
    /// `EI_VERSION` or `e_version` is not EV_CURRENT.
    #[error("wrong ELF version {0} (want 1)")]
    WrongElfVersion(u32),
    /// `e_type` is not ET_CORE.
    #[error("wrong ELF type {0} (want 4, ET_CORE)")]
    WrongType(u16),
    /// `e_machine` is not EM_X86_64.
    #[error("wrong ELF machine {0} (want 62, EM_X86_64)")]
    WrongMachine(u16),
    /// `e_ehsize` or `e_phentsize` do not match ELF64.
    #[error("wrong ELF header sizes: e_ehsize {ehsize} (want 64), e_phentsize {phentsize} (want 56)")]
    WrongHeaderSizes {
        /// `e_ehsize`.
        ehsize: u16,
        /// `e_phentsize`.
        phentsize: u16,
    },
    /// `e_phnum` is 0 or PN_XNUM (extended numbering is not supported).
    #[error("unsupported program header count e_phnum={0}")]
    BadPhnum(u16),
    /// More program headers than [`Limits::max_segments`](crate::Limits::max_segments) allows.
    #[error("{count} program headers, limit is {max}")]
    TooManySegments {
        /// Number in the file.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// `e_phoff` is misaligned or overlaps the ELF header.
    #[error("bad program header table offset {0:#x}")]
    BadPhoff(u64),

    // ---- program headers ----
    /// A program header of a type other than PT_LOAD or PT_NOTE.
    #[error("segment {index}: unexpected program header type {p_type:#x}")]
    UnexpectedSegmentType {
        /// Index in the program header table.
        index: usize,
        /// `p_type`.
        p_type: u32,
    },
    /// There is no PT_NOTE segment.
    #[error("no PT_NOTE segment")]
    MissingNoteSegment,
    /// There is more than one PT_NOTE segment.
    #[error("segments {first} and {second} are both PT_NOTE")]
    DuplicateNoteSegment {
        /// First PT_NOTE index.
        first: usize,
        /// Second PT_NOTE index.
        second: usize,
    },
    /// The PT_NOTE segment is larger than [`Limits::max_note_bytes`](crate::Limits::max_note_bytes).
    #[error("segment {index}: PT_NOTE of {size} bytes, limit is {max}")]
    NoteSegmentTooLarge {
        /// Index in the program header table.
        index: usize,
        /// `p_filesz`.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The PT_NOTE offset is not 4-byte aligned.
    #[error("segment {index}: PT_NOTE at misaligned offset {offset:#x}")]
    MisalignedNoteSegment {
        /// Index in the program header table.
        index: usize,
        /// `p_offset`.
        offset: u64,
    },
    /// A PT_LOAD's guest address is not page-aligned.
    #[error("segment {index}: guest address {vaddr:#x} is not 4 KiB aligned")]
    MisalignedSegmentAddress {
        /// Index in the program header table.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
    },
    /// A PT_LOAD's file offset is not page-aligned.
    #[error("segment {index}: file offset {offset:#x} is not 4 KiB aligned")]
    MisalignedSegmentOffset {
        /// Index in the program header table.
        index: usize,
        /// `p_offset`.
        offset: u64,
    },
    /// A PT_LOAD has `p_memsz == 0`.
    #[error("segment {index}: empty PT_LOAD")]
    EmptySegment {
        /// Index in the program header table.
        index: usize,
    },
    /// `p_filesz > p_memsz`.
    #[error("segment {index}: p_filesz {filesz:#x} > p_memsz {memsz:#x}")]
    FileSizeExceedsMemSize {
        /// Index in the program header table.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// PT_LOAD flags other than PF_R, PF_W, PF_X.
    #[error("segment {index}: unknown p_flags {flags:#x}")]
    BadSegmentFlags {
        /// Index in the program header table.
        index: usize,
        /// `p_flags`.
        flags: u32,
    },
    /// `p_vaddr + p_memsz` is beyond guest memory (or overflows u64).
    #[error("segment {index}: guest range {vaddr:#x}+{memsz:#x} is outside guest memory [0, {max_memory:#x})")]
    SegmentOutsideMemory {
        /// Index in the program header table.
        index: usize,
        /// `p_vaddr`.
        vaddr: u64,
        /// `p_memsz`.
        memsz: u64,
        /// [`Limits::max_memory`](crate::Limits::max_memory).
        max_memory: u64,
    },
    /// `p_offset + p_filesz` is beyond the end of the file (or overflows u64).
    #[error("segment {index}: file range {offset:#x}+{filesz:#x} is beyond end of file {file_len:#x}")]
    SegmentOutOfFile {
        /// Index in the program header table.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A PT_LOAD's file bytes overlap the ELF header, program headers or notes.
    #[error("segment {index}: file offset {offset:#x} overlaps headers/notes ending at {headers_end:#x}")]
    SegmentOverlapsHeaders {
        /// Index in the program header table.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// End of the header and note area.
        headers_end: u64,
    },
    /// Two PT_LOADs cover the same guest address.
    #[error("segments {first} and {second} overlap in guest memory at {addr:#x}")]
    OverlappingSegments {
        /// Index of the lower segment.
        first: usize,
        /// Index of the segment that starts inside it.
        second: usize,
        /// Guest address where `second` starts.
        addr: u64,
    },

    // ---- note container ----
    /// Fewer than 12 bytes left for a note header, and they are not zero padding.
    #[error("note #{index} at {offset:#x}: truncated note header")]
    NoteHeaderTruncated {
        /// Index of the note.
        index: usize,
        /// File offset of the note.
        offset: u64,
    },
    /// The note's name or descriptor runs past the end of the PT_NOTE segment.
    #[error("note #{index} at {offset:#x} (type {note_type:#x}): namesz {namesz} + descsz {descsz} runs past the PT_NOTE end ({available} bytes left)")]
    NoteOutOfBounds {
        /// Index of the note.
        index: usize,
        /// File offset of the note.
        offset: u64,
        /// `n_type`.
        note_type: u32,
        /// `n_namesz`.
        namesz: u32,
        /// `n_descsz`.
        descsz: u32,
        /// Bytes left in the segment after the header.
        available: u64,
    },
    /// `n_namesz` is larger than any owner name we accept (256).
    #[error("note #{index} at {offset:#x}: owner name of {namesz} bytes")]
    NoteNameTooLong {
        /// Index of the note.
        index: usize,
        /// File offset of the note.
        offset: u64,
        /// `n_namesz`.
        namesz: u32,
    },
    /// More notes than [`Limits::max_notes`](crate::Limits::max_notes).
    #[error("more than {max} notes")]
    TooManyNotes {
        /// The limit.
        max: usize,
    },
    /// A note's descriptor has the wrong size for its type.
    #[error("{at}: descriptor is {actual} bytes, expected {expected}")]
    NoteBadSize {
        /// The note.
        at: NoteAt,
        /// Expected size (or the size consumed by the parsed fields).
        expected: u64,
        /// `n_descsz`.
        actual: u64,
    },
    /// A note's descriptor ends before a field it must contain.
    #[error("{at}: descriptor too short for {field}: needs {needed} bytes at {pos}, has {len}")]
    NoteTooShort {
        /// The note.
        at: NoteAt,
        /// The field being read.
        field: &'static str,
        /// Position in the descriptor.
        pos: u64,
        /// Bytes needed.
        needed: u64,
        /// Descriptor length.
        len: u64,
    },
    /// A length or count field inside a note is larger than allowed.
    #[error("{at}: {field} = {value}, limit is {max}")]
    NoteFieldTooLarge {
        /// The note.
        at: NoteAt,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A KM record's own `size` field does not match its structure size.
    #[error("{at}: record size field {found}, expected {expected}")]
    NoteRecordSize {
        /// The note.
        at: NoteAt,
        /// The `size` field.
        found: u64,
        /// The size KM writes.
        expected: u64,
    },
    /// A string in a note is not NUL-terminated within its bounds, or not UTF-8.
    #[error("{at}: {field} is not a NUL-terminated UTF-8 string within bounds")]
    NoteBadString {
        /// The note.
        at: NoteAt,
        /// The field.
        field: &'static str,
    },
    /// A field holds a value outside its enumeration.
    #[error("{at}: {field} has invalid value {value:#x}")]
    NoteBadValue {
        /// The note.
        at: NoteAt,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A note that may appear once appears twice.
    #[error("{note} appears twice (notes #{first} and #{second})")]
    DuplicateNote {
        /// The note name.
        note: &'static str,
        /// Index of the first one.
        first: usize,
        /// Index of the second one.
        second: usize,
    },
    /// A required note is missing.
    #[error("required note {0} is missing")]
    MissingNote(&'static str),
    /// The identity note has a format version this reader does not know.
    #[error("snapshot format version {found}, this reader supports 1..={supported}")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Newest version supported.
        supported: u32,
    },

    // ---- payload hash ----
    /// The file has no SNAPCALL identity note, so no payload hash to verify.
    #[error("snapshot has no payload hash (no SNAPCALL identity note)")]
    NoPayloadHash,
    /// The payload hash does not match the file's contents.
    #[error("payload hash mismatch: file says {expected}, contents hash to {actual}")]
    PayloadHashMismatch {
        /// Hex of the stored hash.
        expected: String,
        /// Hex of the computed hash.
        actual: String,
    },

    // ---- writer ----
    /// A memory segment passed to the writer is not page-aligned in address or length.
    #[error("memory segment {index}: guest address {guest_addr:#x} / length {len:#x} not 4 KiB aligned")]
    UnalignedMemorySegment {
        /// Index in the `memory` slice.
        index: usize,
        /// Its guest address.
        guest_addr: u64,
        /// Its length.
        len: u64,
    },
    /// A memory segment passed to the writer is empty, overlaps another or has bad flags.
    #[error("memory segment {index}: {reason}")]
    BadMemorySegment {
        /// Index in the `memory` slice.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A value passed to the writer cannot be represented in the format.
    #[error("cannot write {what}: {reason}")]
    Unrepresentable {
        /// What was being written.
        what: &'static str,
        /// Why it does not fit.
        reason: String,
    },
}
