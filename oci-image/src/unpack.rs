//! An image's layers unpacked, bottom first, into an empty rootfs directory.
//!
//! A layer is input from whoever built the image, so it is treated as hostile:
//!
//! | entry | what happens |
//! |---|---|
//! | path with a `..` component | refused (the deploy fails) |
//! | absolute path (`/etc/x`) | neutralised: taken relative to the rootfs, as Docker does |
//! | any path whose parent is a symlink | resolved *inside* the rootfs (`openat2` `RESOLVE_IN_ROOT`), never on the host |
//! | symlink, any target | created as is: the guest resolves it inside its rootfs, and nothing here follows it on the host |
//! | hardlink | its target is looked up inside the rootfs and must be a regular file from an earlier entry; else refused |
//! | character or block device, FIFO | skipped (counted in the report): the guest has no device nodes |
//! | setuid, setgid, sticky bits | cleared; owners are not kept (every file belongs to the server's user) |
//! | `.wh.NAME` | removes `NAME` from the layers below |
//! | `.wh..wh..opq` | removes everything the layers below put in its directory |
//!
//! Caps ([`UnpackLimits`]): uncompressed bytes of all layers, number of entries, path length;
//! a gzip bomb stops at the byte cap. Each layer's blob is checked against its descriptor's
//! size and sha256 digest before it is decompressed, and its uncompressed stream against the
//! config's `diff_id` as it is read.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::OciError;
use crate::layout::{blob_path, Descriptor, Image};

/// Caps on what an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Uncompressed bytes of all layers' tar streams together.
    pub max_bytes: u64,
    /// Tar entries of all layers together.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { max_bytes: 1 << 30, max_entries: 200_000 }
    }
}

/// Longest path of an entry (PATH_MAX).
const MAX_PATH: usize = 4096;

/// What unpacking did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub layers: usize,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub whiteouts: u64,
    /// Device nodes and FIFOs not created.
    pub skipped_special: u64,
    /// Uncompressed bytes of the tar streams.
    pub bytes: u64,
}

/// An open rootfs directory, for lookups and writes that stay inside it.
pub struct RootDir(OwnedFd);

impl RootDir {
    pub fn open(path: &Path) -> io::Result<RootDir> {
        open_dir(path).map(RootDir)
    }
}

/// Opens `rel` (read-only) inside the rootfs, symlinks resolved inside it.
pub fn open_in_root_path(root: &RootDir, rel: &Path) -> io::Result<File> {
    open_in_root(&root.0, rel, libc::O_RDONLY).map(File::from)
}

/// Writes a fresh file `rel` (parents made, mode 0755) inside the rootfs with `mode`,
/// replacing whatever was there; never through a symlink out of it. For files snapcall puts
/// into an unpacked image (secrets).
pub fn write_file_in_root(rootfs: &Path, rel: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let root = open_dir(rootfs)?;
    let rel = clean(rel).map_err(|p| io::Error::new(io::ErrorKind::InvalidInput, p))?;
    let rel = rel.ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
    let (parent, name) = split(&rel);
    let dir = dir_in_root(&root, &parent, true)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTDIR))?;
    remove_any(&dir, name)?;
    let mut f = create_file(&dir, name, mode)?;
    io::Write::write_all(&mut f, bytes)
}

/// Unpacks `image`'s layers into `rootfs`, which must exist and be empty.
pub fn unpack_image(image: &Image, rootfs: &Path, limits: UnpackLimits) -> Result<UnpackReport, OciError> {
    let root = open_dir(rootfs).map_err(OciError::io(format!("rootfs {}", rootfs.display())))?;
    let mut report = UnpackReport::default();
    let mut budget = Budget { bytes_left: limits.max_bytes, entries_left: limits.max_entries, limits };
    for (n, layer) in image.layers.iter().enumerate() {
        let blob = open_verified(&image.layout, layer, n)?;
        let diff_id = image.diff_ids.get(n).map(String::as_str);
        unpack_layer(&root, blob, layer, n, diff_id, &mut budget, &mut report)?;
        report.layers += 1;
    }
    report.bytes = limits.max_bytes - budget.bytes_left;
    Ok(report)
}

struct Budget {
    bytes_left: u64,
    entries_left: u64,
    limits: UnpackLimits,
}

/// Opens a layer blob and checks its size and digest, then rewinds it.
fn open_verified(layout: &Path, d: &Descriptor, n: usize) -> Result<File, OciError> {
    let what = format!("layer {n} ({})", d.digest);
    let path = blob_path(layout, &d.digest)?;
    let mut f = File::open(&path).map_err(OciError::io(format!("{what}: {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(OciError::io(what.clone()))?;
        if k == 0 {
            break;
        }
        len += k as u64;
        if len > d.size {
            break;
        }
        h.update(&buf[..k]);
    }
    if len != d.size {
        return Err(OciError::bad(&what, format!("the descriptor says {} bytes, the blob has {}", d.size, len)));
    }
    let actual = format!("sha256:{:x}", h.finalize());
    if actual != d.digest {
        return Err(OciError::DigestMismatch { what, expected: d.digest.clone(), actual });
    }
    f.rewind().map_err(OciError::io(what))?;
    Ok(f)
}

/// Uncompressed bytes still allowed, shared by the stream and the loop that reads it.
struct Meter {
    left: Cell<u64>,
    over: Cell<bool>,
}

/// Counts, caps and hashes the uncompressed stream.
struct Metered<'a, R> {
    inner: R,
    meter: &'a Meter,
    hash: Sha256,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.meter.left.get();
        if left == 0 {
            // One byte more than allowed tells a stream that ends exactly at the cap from one
            // that goes on.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.meter.over.set(true);
                return Err(io::Error::other("uncompressed size cap reached"));
            }
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let k = self.inner.read(&mut buf[..want])?;
        self.meter.left.set(left - k as u64);
        self.hash.update(&buf[..k]);
        Ok(k)
    }
}

fn decompressor(blob: File, layer: &Descriptor, what: &str) -> Result<Box<dyn Read>, OciError> {
    let mt = layer.media_type.as_str();
    if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
        return Err(OciError::Unsupported { what: what.into(), problem: format!("zstd layers ({mt})") });
    }
    if mt.contains("nondistributable") && !mt.contains("tar") {
        return Err(OciError::Unsupported { what: what.into(), problem: format!("media type {mt}") });
    }
    // The media type says gzip or not; the magic number decides when it is unknown.
    let mut blob = io::BufReader::new(blob);
    let gzip = if mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with("tar.gzip") {
        true
    } else if mt.ends_with(".tar") || mt.ends_with("+tar") {
        false
    } else {
        use std::io::BufRead;
        let head = blob.fill_buf().map_err(OciError::io(what.to_string()))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    Ok(if gzip { Box::new(flate2::read::GzDecoder::new(blob)) } else { Box::new(blob) })
}

fn unpack_layer(
    root: &OwnedFd,
    blob: File,
    layer: &Descriptor,
    n: usize,
    diff_id: Option<&str>,
    budget: &mut Budget,
    report: &mut UnpackReport,
) -> Result<(), OciError> {
    let what = format!("layer {n} ({})", layer.digest);
    let stream = decompressor(blob, layer, &what)?;
    let meter = Meter { left: Cell::new(budget.bytes_left), over: Cell::new(false) };
    let mut metered = Metered { inner: stream, meter: &meter, hash: Sha256::new() };
    let too_big = |b: &Budget| OciError::TooBig {
        what: what.clone(),
        problem: format!("the layers unpack to more than {} bytes", b.limits.max_bytes),
    };
    // Paths this layer wrote: an opaque whiteout removes only what the layers below put there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    {
        let mut archive = tar::Archive::new(&mut metered);
        let entries = archive.entries().map_err(|e| OciError::bad(&what, format!("not a tar stream: {e}")))?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(_) if meter.over.get() => return Err(too_big(budget)),
                Err(e) => return Err(OciError::bad(&what, format!("not a valid tar stream: {e}"))),
            };
            if budget.entries_left == 0 {
                return Err(OciError::TooBig {
                    what: what.clone(),
                    problem: format!("more than {} entries", budget.limits.max_entries),
                });
            }
            budget.entries_left -= 1;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let unsafe_entry =
                |problem: &str| OciError::UnsafeEntry { layer: n, entry: shown.clone(), problem: problem.into() };
            if raw.len() > MAX_PATH {
                return Err(unsafe_entry(&format!("path longer than {MAX_PATH} bytes")));
            }
            let Some(path) = clean(Path::new(OsStr::from_bytes(&raw))).map_err(|p| unsafe_entry(&p))? else {
                continue; // the root itself
            };
            let (parent, name) = split(&path);
            let name_bytes = name.as_bytes();
            // Whiteouts.
            if name_bytes == b".wh..wh..opq" {
                if let Some(dir) = dir_in_root(root, &parent, false).map_err(|e| io_entry(n, &shown, e))? {
                    opaque(&dir, &parent, &written).map_err(|e| io_entry(n, &shown, e))?;
                }
                report.whiteouts += 1;
                continue;
            }
            if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(unsafe_entry("a whiteout must name an entry"));
                }
                if let Some(dir) = dir_in_root(root, &parent, false).map_err(|e| io_entry(n, &shown, e))? {
                    remove_any(&dir, OsStr::from_bytes(hidden)).map_err(|e| io_entry(n, &shown, e))?;
                }
                report.whiteouts += 1;
                continue;
            }
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            match kind {
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    report.skipped_special += 1;
                    continue;
                }
                tar::EntryType::Directory => {
                    let dir = dir_in_root(root, &parent, true)
                        .map_err(|e| io_entry(n, &shown, e))?
                        .ok_or_else(|| unsafe_entry("its parent is not a directory"))?;
                    make_dir(&dir, name, mode | 0o700).map_err(|e| io_entry(n, &shown, e))?;
                    report.dirs += 1;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.header().size().unwrap_or(u64::MAX);
                    if size > meter.left.get() {
                        return Err(too_big(budget));
                    }
                    let dir = dir_in_root(root, &parent, true)
                        .map_err(|e| io_entry(n, &shown, e))?
                        .ok_or_else(|| unsafe_entry("its parent is not a directory"))?;
                    remove_any(&dir, name).map_err(|e| io_entry(n, &shown, e))?;
                    let mut out = create_file(&dir, name, mode).map_err(|e| io_entry(n, &shown, e))?;
                    match io::copy(&mut entry, &mut out) {
                        Ok(_) => {}
                        Err(_) if meter.over.get() => return Err(too_big(budget)),
                        Err(e) => return Err(io_entry(n, &shown, e)),
                    }
                    report.files += 1;
                }
                tar::EntryType::Symlink => {
                    let target =
                        entry.link_name_bytes().ok_or_else(|| unsafe_entry("a symlink without a target"))?.into_owned();
                    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                        return Err(unsafe_entry("symlink target empty, too long or with a NUL"));
                    }
                    let dir = dir_in_root(root, &parent, true)
                        .map_err(|e| io_entry(n, &shown, e))?
                        .ok_or_else(|| unsafe_entry("its parent is not a directory"))?;
                    remove_any(&dir, name).map_err(|e| io_entry(n, &shown, e))?;
                    symlink_at(&target, &dir, name).map_err(|e| io_entry(n, &shown, e))?;
                    report.symlinks += 1;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| unsafe_entry("a hardlink without a target"))?
                        .into_owned();
                    let target = clean(Path::new(OsStr::from_bytes(&target)))
                        .map_err(|p| unsafe_entry(&format!("hardlink target: {p}")))?
                        .ok_or_else(|| unsafe_entry("a hardlink to the root"))?;
                    let (tparent, tname) = split(&target);
                    let tdir = dir_in_root(root, &tparent, false)
                        .map_err(|e| io_entry(n, &shown, e))?
                        .ok_or_else(|| unsafe_entry("hardlink target is not in the rootfs"))?;
                    if !is_regular(&tdir, tname).map_err(|e| io_entry(n, &shown, e))? {
                        return Err(unsafe_entry("hardlink target is not a regular file unpacked before it"));
                    }
                    let dir = dir_in_root(root, &parent, true)
                        .map_err(|e| io_entry(n, &shown, e))?
                        .ok_or_else(|| unsafe_entry("its parent is not a directory"))?;
                    remove_any(&dir, name).map_err(|e| io_entry(n, &shown, e))?;
                    link_at(&tdir, tname, &dir, name).map_err(|e| io_entry(n, &shown, e))?;
                    report.hardlinks += 1;
                }
                // PAX and GNU long-name headers are consumed by `tar`; anything else (sparse
                // files, volume labels) is not something a container image needs.
                other => return Err(unsafe_entry(&format!("unsupported tar entry type {other:?}"))),
            }
            written.insert(path);
        }
    }
    // The rest of the stream (tar padding, trailing blocks) counts for the diff_id.
    let mut sink = io::sink();
    match io::copy(&mut metered, &mut sink) {
        Ok(_) => {}
        Err(_) if meter.over.get() => return Err(too_big(budget)),
        Err(e) => return Err(OciError::bad(&what, format!("cannot read to the end: {e}"))),
    }
    budget.bytes_left = meter.left.get();
    if let Some(want) = diff_id {
        let actual = format!("sha256:{:x}", metered.hash.finalize());
        if actual != want {
            return Err(OciError::DigestMismatch {
                what: format!("{what}: uncompressed (diff_id)"),
                expected: want.into(),
                actual,
            });
        }
    }
    Ok(())
}

fn io_entry(layer: usize, entry: &str, e: io::Error) -> OciError {
    OciError::UnsafeEntry { layer, entry: entry.into(), problem: e.to_string() }
}

/// `path` relative to the rootfs: `/` and `.` dropped, `..` refused. `None` for the root.
fn clean(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("a path with a '..' component".into()),
            Component::Prefix(_) => return Err("a path with a prefix".into()),
        }
    }
    if out.as_os_str().as_bytes().contains(&0) {
        return Err("a path with a NUL byte".into());
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

fn split(path: &Path) -> (PathBuf, &OsStr) {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    (parent, path.file_name().unwrap_or_default())
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
    owned(fd as libc::c_long)
}

/// `openat2(root, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks and `..` resolve
/// inside `root`, whatever they say.
fn open_in_root(root: &OwnedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(if rel.as_os_str().is_empty() { OsStr::new(".") } else { rel.as_os_str() })?;
    // SAFETY: open_how is plain old data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a dirfd we own, a NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(fd)
}

/// The directory `rel` inside the rootfs, created (mode 0755) component by component when
/// `create`; `None` when a component exists but is not a directory (or is missing and not
/// `create`).
fn dir_in_root(root: &OwnedFd, rel: &Path, create: bool) -> io::Result<Option<OwnedFd>> {
    match open_in_root(root, rel, libc::O_DIRECTORY | libc::O_RDONLY) {
        Ok(fd) => return Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut dir = open_in_root(root, Path::new(""), libc::O_DIRECTORY | libc::O_RDONLY)?;
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        so_far.push(c);
        match open_in_root(root, &so_far, libc::O_DIRECTORY | libc::O_RDONLY) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = cstr(c.as_os_str())?;
                // SAFETY: mkdirat in a directory fd we hold, with a single-component name.
                if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
                    let e = io::Error::last_os_error();
                    // A dangling symlink in the way: it cannot become a directory here.
                    return if e.raw_os_error() == Some(libc::EEXIST) { Ok(None) } else { Err(e) };
                }
                dir = open_in_root(root, &so_far, libc::O_DIRECTORY | libc::O_RDONLY)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(dir))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` if there is nothing.
fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: stat is plain old data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a dirfd we hold, a NUL-terminated name and a live stat buffer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    Ok(Some(st))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_regular(dir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    Ok(stat_at(dir, name)?.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG))
}

/// Removes `name` in `dir` whatever it is (a directory with everything in it); no symlink is
/// followed.
fn remove_any(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else { return Ok(()) };
    let c = cstr(name)?;
    if is_dir(&st) {
        let child = {
            // SAFETY: openat with O_NOFOLLOW in a dirfd we hold; the result is checked.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            owned(fd as libc::c_long)?
        };
        for entry in list(&child)? {
            remove_any(&child, &entry)?;
        }
        // SAFETY: unlinkat of a single name in a dirfd we hold.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        // SAFETY: unlinkat of a single name in a dirfd we hold.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The names in a directory (not `.` and `..`).
fn list(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    // The fd's own path, read through /proc: the directory is the one we hold.
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for e in std::fs::read_dir(path)? {
        names.push(e?.file_name());
    }
    Ok(names)
}

/// An opaque whiteout in `parent`: everything in it that this layer did not write goes.
fn opaque(dir: &OwnedFd, parent: &Path, written: &HashSet<PathBuf>) -> io::Result<()> {
    for name in list(dir)? {
        if !written.contains(&parent.join(&name)) {
            remove_any(dir, &name)?;
        }
    }
    Ok(())
}

fn make_dir(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    match stat_at(dir, name)? {
        Some(st) if is_dir(&st) => {}
        Some(_) => {
            remove_any(dir, name)?;
            // SAFETY: mkdirat of a single name in a dirfd we hold.
            if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        None => {
            // SAFETY: as above.
            if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: fchmodat of a single name (a directory we just checked or made) in our dirfd.
    if unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode & 0o777, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn create_file(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat of a single name in a dirfd we hold; O_EXCL|O_NOFOLLOW: a fresh file.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, (mode & 0o777) as libc::c_uint) };
    let fd = owned(fd as libc::c_long)?;
    // The umask may have cleared bits the image asked for; setuid/setgid are never set.
    // SAFETY: fchmod on the fd we just created.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o777) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(fd))
}

fn symlink_at(target: &[u8], dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let c = cstr(name)?;
    // SAFETY: NUL-terminated strings, a dirfd we hold.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn link_at(from_dir: &OwnedFd, from: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let f = cstr(from)?;
    let c = cstr(name)?;
    // SAFETY: single names in dirfds we hold; flags 0: a symlink `from` is not followed.
    if unsafe { libc::linkat(from_dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
