//! The program's writable filesystem: an in-memory upper layer over the read-only rootfs.
//!
//! The rootfs on the host is never written. Everything the program changes lives here, in
//! the monitor, keyed by absolute path: files it creates or opens for writing (a rootfs file
//! is copied up whole the first time), directories it makes, symlinks, and whiteouts for
//! what it removed from the rootfs. A directory made here is opaque: the rootfs below it is
//! hidden. `/tmp` starts as an empty opaque directory. Lookups walk the path component by
//! component only where this layer has something on the way; a path it does not touch goes
//! straight to the rootfs, as before.
//!
//! Every byte and every entry is charged to the program's [`MemoryBudget`] (ENOSPC when it
//! is spent), and all of it goes away with the VM. The state at the snapshot point is saved
//! in the snapshot ([`Overlay::entries`] / [`Overlay::from_entries`]) and each restored call
//! starts from it, sharing file contents copy-on-write ([`Overlay::fork`]).
//!
//! Limits, as documented in docs/vmm.md: files are not sparse (a write far past the end
//! takes the memory of the gap); a rootfs directory cannot be renamed (EXDEV, as Linux's
//! overlayfs says without redirect_dir); paths inside this layer are taken literally, so a
//! rootfs symlink to a directory is not followed into the keys here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::budget::MemoryBudget;
use crate::errno::*;
use crate::files::Rootfs;

/// Bytes of the budget one entry takes besides its contents (the monitor's bookkeeping).
pub const ENTRY_COST: u64 = 256;
/// The longest name of one path component (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Symlinks followed in one lookup before ELOOP (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;
/// Inode numbers of this layer's files start here (far from the rootfs's).
const FIRST_INO: u64 = 1 << 40;
/// The st_dev this layer's files report.
pub const OVERLAY_DEV: u64 = 0x5C00;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A timestamp: seconds and nanoseconds since the epoch (CLOCK_REALTIME).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: i64,
}

impl Time {
    pub fn now() -> Time {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime into a local.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        Time { secs: ts.tv_sec, nanos: ts.tv_nsec }
    }
}

/// What stat reports of an entry besides its type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub ino: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

impl Meta {
    fn new(mode: u32, ino: u64) -> Meta {
        let now = Time::now();
        Meta { mode: mode & 0o7777, ino, atime: now, mtime: now, ctime: now }
    }
}

/// A regular file's contents and attributes, shared by its names (hard links) and open fds.
#[derive(Debug)]
pub struct FileNode {
    pub meta: Meta,
    /// The bytes, shared copy-on-write with the snapshot's copy and other calls.
    data: Arc<Vec<u8>>,
    /// Names it has (0 once unlinked; open fds keep it alive).
    pub nlink: u32,
    budget: MemoryBudget,
}

impl FileNode {
    fn new(meta: Meta, data: Arc<Vec<u8>>, budget: &MemoryBudget) -> Result<Arc<Mutex<FileNode>>, Errno> {
        budget.charge(data.len() as u64).map_err(|_| ENOSPC)?;
        Ok(Arc::new(Mutex::new(FileNode { meta, data, nlink: 1, budget: budget.clone() })))
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Sets the length to `len` (zeros past the old end), charging or releasing the budget.
    pub fn resize(&mut self, len: u64) -> Result<(), Errno> {
        let len_usize = usize::try_from(len).map_err(|_| EFBIG)?;
        if len > i64::MAX as u64 {
            return Err(EFBIG);
        }
        let old = self.data.len() as u64;
        if len > old {
            self.budget.charge(len - old).map_err(|_| ENOSPC)?;
        }
        let data = Arc::make_mut(&mut self.data);
        if len > old && data.try_reserve_exact(len_usize - data.len()).is_err() {
            self.budget.release(len - old);
            return Err(ENOSPC);
        }
        data.resize(len_usize, 0);
        if len < old {
            data.shrink_to_fit();
            self.budget.release(old - len);
        }
        Ok(())
    }

    /// Writes `src` at `offset`, growing the file as needed.
    pub fn write_at(&mut self, offset: u64, src: &[u8]) -> Result<usize, Errno> {
        let end = offset.checked_add(src.len() as u64).filter(|&e| e <= i64::MAX as u64).ok_or(EFBIG)?;
        if end > self.len() {
            self.resize(end)?;
        }
        let at = offset as usize;
        Arc::make_mut(&mut self.data)[at..at + src.len()].copy_from_slice(src);
        let now = Time::now();
        self.meta.mtime = now;
        self.meta.ctime = now;
        Ok(src.len())
    }

    /// Copies bytes from `offset` into `dst`: how many (0 at or past the end).
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> usize {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let n = dst.len().min(self.data.len() - start);
        dst[..n].copy_from_slice(&self.data[start..start + n]);
        n
    }
}

impl Drop for FileNode {
    fn drop(&mut self) {
        self.budget.release(self.data.len() as u64);
    }
}

pub type SharedFile = Arc<Mutex<FileNode>>;

/// One entry of the layer.
#[derive(Debug, Clone)]
pub enum Node {
    File(SharedFile),
    /// A directory: `opaque` hides whatever the rootfs has at and below its path.
    Dir {
        meta: Meta,
        opaque: bool,
    },
    Symlink {
        meta: Meta,
        target: String,
    },
    /// Removed: the rootfs's entry at this path is hidden.
    Whiteout,
}

/// What a path names, once resolved.
#[derive(Debug, Clone)]
pub enum Found {
    /// An entry of this layer.
    Node(Node),
    /// Something only the rootfs has (at this resolved path).
    Lower,
    /// Nothing, but its parent directory exists (so it can be created).
    Nothing,
}

/// Kinds of entries in a directory listing (getdents64's d_type).
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;

/// One entry in a merged directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub kind: u8,
}

/// The writable layer of one program.
#[derive(Debug)]
pub struct Overlay {
    nodes: BTreeMap<String, Node>,
    budget: MemoryBudget,
    next_ino: AtomicU64,
}

/// An entry as the snapshot stores it: its path, type, attributes and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedEntry {
    pub path: String,
    pub kind: SavedKind,
    pub mode: u32,
    pub mtime: Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedKind {
    File(Arc<Vec<u8>>),
    Dir { opaque: bool },
    Symlink(String),
    Whiteout,
}

/// Splits an absolute path into its components, `.` and `..` applied lexically.
pub fn components(path: &str) -> Result<Vec<&str>, Errno> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c if c.len() > NAME_MAX => return Err(ENAMETOOLONG),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The absolute path of `components`.
fn join(components: &[&str]) -> String {
    if components.is_empty() {
        "/".into()
    } else {
        components.iter().fold(String::new(), |acc, c| acc + "/" + c)
    }
}

/// `path` normalised ("/a/./b/../c" is "/a/c").
pub fn normalize(path: &str) -> Result<String, Errno> {
    Ok(join(&components(path)?))
}

/// The parent of a normalised path ("/" for "/a" and "/").
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a normalised path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

impl Overlay {
    /// A layer with only an empty `/tmp` (mode 1777).
    pub fn new(budget: &MemoryBudget) -> Overlay {
        let mut o = Overlay { nodes: BTreeMap::new(), budget: budget.clone(), next_ino: AtomicU64::new(FIRST_INO) };
        let tmp = Node::Dir { meta: Meta::new(0o1777, o.ino()), opaque: true };
        // The first entry always fits: a budget smaller than one entry is not a program.
        if o.budget.charge(ENTRY_COST).is_ok() {
            o.nodes.insert("/tmp".into(), tmp);
        }
        o
    }

    /// Whether the program changed nothing but what every process starts with.
    pub fn is_pristine(&self) -> bool {
        self.nodes.len() == 1
            && matches!(self.nodes.get("/tmp"), Some(Node::Dir { .. }))
            && self.children_in_layer("/tmp").next().is_none()
    }

    pub fn ino(&self) -> u64 {
        self.next_ino.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this layer has anything at, above or below `path` (normalised): if not, the
    /// rootfs alone answers for it.
    pub fn touches(&self, path: &str) -> bool {
        if self.nodes.is_empty() {
            return false;
        }
        let mut at = path;
        loop {
            if self.nodes.contains_key(at) {
                return true;
            }
            if at == "/" {
                break;
            }
            at = parent(at);
        }
        self.has_below(path)
    }

    fn has_below(&self, path: &str) -> bool {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        self.nodes.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// This layer's entries directly in directory `dir`.
    fn children_in_layer<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        let len = prefix.len();
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(move |(k, _)| !k[len..].contains('/'))
            .map(move |(k, n)| (&k[k.rfind('/').map_or(0, |i| i + 1)..], n))
    }

    #[cfg(test)]
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Resolves `path` (absolute): follows this layer's symlinks (the last one only with
    /// `follow`), and tells what is there. Errors as Linux's lookup: ENOENT for a missing
    /// directory on the way, ENOTDIR for a file on the way, ELOOP, ENAMETOOLONG.
    pub fn resolve(&self, rootfs: &Rootfs, path: &str, follow: bool) -> Result<(String, Found), Errno> {
        let mut pending: Vec<String> = components(path)?.into_iter().rev().map(String::from).collect();
        let mut done: Vec<String> = Vec::new();
        let mut opaque_above = false;
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            let last = pending.is_empty();
            done.push(c);
            let here = join(&done.iter().map(String::as_str).collect::<Vec<_>>());
            match self.nodes.get(&here) {
                Some(Node::Symlink { target, .. }) if !last || follow => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(ELOOP);
                    }
                    done.pop();
                    if target.starts_with('/') {
                        done.clear();
                        opaque_above = false;
                    }
                    for t in components_raw(target).into_iter().rev() {
                        pending.push(t.to_string());
                    }
                }
                Some(Node::Whiteout) => return if last { Ok((here, Found::Nothing)) } else { Err(ENOENT) },
                Some(Node::File(_)) | Some(Node::Symlink { .. }) if !last => return Err(ENOTDIR),
                Some(node) => {
                    if let Node::Dir { opaque: true, .. } = node {
                        opaque_above = true;
                    }
                    if last {
                        return Ok((here, Found::Node(node.clone())));
                    }
                }
                None if opaque_above => return if last { Ok((here, Found::Nothing)) } else { Err(ENOENT) },
                None if last => {
                    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
                    return match rootfs.open_in_root(&here, flags) {
                        Ok(_) => Ok((here, Found::Lower)),
                        Err(ENOENT) => Ok((here, Found::Nothing)),
                        Err(e) => Err(e),
                    };
                }
                None if !self.has_below(&here) && !pending.iter().any(|c| c == "..") => {
                    // Nothing of this layer further down: the rootfs resolves the rest.
                    let rest: Vec<String> = pending.drain(..).rev().collect();
                    let full = normalize(&format!("{here}/{}", rest.join("/")))?;
                    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
                    return match rootfs.open_in_root(&full, flags) {
                        Ok(_) => Ok((full, Found::Lower)),
                        Err(ENOENT) => {
                            rootfs.open_in_root(parent(&full), libc::O_PATH | libc::O_DIRECTORY)?;
                            Ok((full, Found::Nothing))
                        }
                        Err(e) => Err(e),
                    };
                }
                None => {
                    // A rootfs directory this layer has entries under.
                    rootfs.open_in_root(&here, libc::O_PATH | libc::O_DIRECTORY)?;
                }
            }
        }
        let here = join(&done.iter().map(String::as_str).collect::<Vec<_>>());
        match self.nodes.get(&here) {
            Some(node) => Ok((here, Found::Node(node.clone()))),
            None => Ok((here, Found::Lower)),
        }
    }

    /// Whether `path` (resolved) is a directory, in this layer or the rootfs.
    pub fn is_dir(&self, rootfs: &Rootfs, path: &str, found: &Found) -> bool {
        match found {
            Found::Node(Node::Dir { .. }) => true,
            Found::Node(_) | Found::Nothing => false,
            Found::Lower => rootfs.open_in_root(path, libc::O_PATH | libc::O_DIRECTORY).is_ok(),
        }
    }

    /// Checks that `path`'s parent is a directory one can create entries in.
    fn parent_is_dir(&self, rootfs: &Rootfs, path: &str) -> Result<(), Errno> {
        if path == "/" {
            return Err(EEXIST);
        }
        let (resolved, found) = self.resolve(rootfs, parent(path), true)?;
        match found {
            Found::Nothing => Err(ENOENT),
            f if self.is_dir(rootfs, &resolved, &f) => Ok(()),
            _ => Err(ENOTDIR),
        }
    }

    /// Puts `node` at `path` (charging a new entry).
    fn put(&mut self, path: &str, node: Node) -> Result<(), Errno> {
        let fresh = !self.nodes.contains_key(path);
        if fresh {
            self.budget.charge(ENTRY_COST + path.len() as u64).map_err(|_| ENOSPC)?;
        }
        if let Some(Node::File(old)) = self.nodes.insert(path.to_string(), node) {
            let mut f = lock(&old);
            f.nlink = f.nlink.saturating_sub(1);
        }
        Ok(())
    }

    /// Drops `path`'s entry, leaving a whiteout if the rootfs has something there.
    fn remove(&mut self, rootfs: &Rootfs, path: &str) {
        let lower = !self.hidden_in_rootfs(path) && rootfs.open_in_root(path, libc::O_PATH | libc::O_NOFOLLOW).is_ok();
        if lower {
            let _ = self.put(path, Node::Whiteout);
        } else if let Some(old) = self.nodes.remove(path) {
            self.budget.release(ENTRY_COST + path.len() as u64);
            if let Node::File(f) = old {
                let mut f = lock(&f);
                f.nlink = f.nlink.saturating_sub(1);
            }
        }
    }

    /// Whether an opaque directory of this layer above `path` hides the rootfs there.
    fn hidden_in_rootfs(&self, path: &str) -> bool {
        let mut at = parent(path);
        loop {
            if let Some(Node::Dir { opaque: true, .. }) = self.nodes.get(at) {
                return true;
            }
            if matches!(self.nodes.get(at), Some(Node::Whiteout)) {
                return true;
            }
            if at == "/" {
                return false;
            }
            at = parent(at);
        }
    }

    /// The file at resolved `path`, copied up from the rootfs if only the rootfs has it.
    pub fn file_for_write(&mut self, rootfs: &Rootfs, path: &str, found: &Found) -> Result<SharedFile, Errno> {
        match found {
            Found::Node(Node::File(f)) => Ok(f.clone()),
            Found::Node(Node::Dir { .. }) => Err(EISDIR),
            Found::Node(_) | Found::Nothing => Err(ENOENT),
            Found::Lower => self.copy_up(rootfs, path),
        }
    }

    /// Copies the rootfs's regular file at `path` into this layer.
    fn copy_up(&mut self, rootfs: &Rootfs, path: &str) -> Result<SharedFile, Errno> {
        use std::io::Read;
        let fd = rootfs.open_in_root(path, libc::O_RDONLY)?;
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if meta.is_dir() {
            return Err(EISDIR);
        }
        if meta.len() > self.budget.available() {
            return Err(ENOSPC);
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        use std::os::unix::fs::PermissionsExt;
        let node = FileNode::new(Meta::new(meta.permissions().mode(), self.ino()), Arc::new(data), &self.budget)?;
        self.put(path, Node::File(node.clone()))?;
        Ok(node)
    }

    /// Creates an empty regular file at `path` (which must not exist; its parent must).
    pub fn create_file(&mut self, rootfs: &Rootfs, path: &str, mode: u32) -> Result<SharedFile, Errno> {
        self.parent_is_dir(rootfs, path)?;
        let node = FileNode::new(Meta::new(mode, self.ino()), Arc::new(Vec::new()), &self.budget)?;
        self.put(path, Node::File(node.clone()))?;
        Ok(node)
    }

    /// An unnamed file (O_TMPFILE): charged, in no directory.
    pub fn unnamed_file(&self, mode: u32) -> Result<SharedFile, Errno> {
        FileNode::new(Meta::new(mode, self.ino()), Arc::new(Vec::new()), &self.budget)
    }

    /// mkdir.
    pub fn mkdir(&mut self, rootfs: &Rootfs, path: &str, mode: u32) -> Result<(), Errno> {
        let (path, found) = self.resolve(rootfs, path, false)?;
        if !matches!(found, Found::Nothing) {
            return Err(EEXIST);
        }
        self.parent_is_dir(rootfs, &path)?;
        let node = Node::Dir { meta: Meta::new(mode, self.ino()), opaque: true };
        self.put(&path, node)
    }

    /// symlink.
    pub fn symlink(&mut self, rootfs: &Rootfs, target: &str, path: &str) -> Result<(), Errno> {
        let (path, found) = self.resolve(rootfs, path, false)?;
        if !matches!(found, Found::Nothing) {
            return Err(EEXIST);
        }
        self.parent_is_dir(rootfs, &path)?;
        let node = Node::Symlink { meta: Meta::new(0o777, self.ino()), target: target.to_string() };
        self.put(&path, node)
    }

    /// link: a second name for a regular file (copied up first if the rootfs has it).
    pub fn link(&mut self, rootfs: &Rootfs, old: &str, new: &str, follow: bool) -> Result<(), Errno> {
        let (old, found) = self.resolve(rootfs, old, follow)?;
        if self.is_dir(rootfs, &old, &found) {
            return Err(EPERM);
        }
        let file = match &found {
            Found::Node(Node::Symlink { .. }) => return Err(EPERM),
            found => self.file_for_write(rootfs, &old, found)?,
        };
        let (new, found) = self.resolve(rootfs, new, false)?;
        if !matches!(found, Found::Nothing) {
            return Err(EEXIST);
        }
        self.parent_is_dir(rootfs, &new)?;
        self.put(&new, Node::File(file.clone()))?;
        lock(&file).nlink += 1;
        Ok(())
    }

    /// unlink (not of a directory).
    pub fn unlink(&mut self, rootfs: &Rootfs, path: &str) -> Result<(), Errno> {
        let (path, found) = self.resolve(rootfs, path, false)?;
        match found {
            Found::Nothing => Err(ENOENT),
            f if self.is_dir(rootfs, &path, &f) => Err(EISDIR),
            _ => {
                self.remove(rootfs, &path);
                Ok(())
            }
        }
    }

    /// The merged listing of directory `dir` (resolved): the rootfs's entries not removed or
    /// replaced here, then this layer's.
    pub fn list(&self, rootfs: &Rootfs, dir: &str) -> Result<Vec<DirEntry>, Errno> {
        let mut entries: BTreeMap<String, DirEntry> = BTreeMap::new();
        let lower_visible =
            !matches!(self.nodes.get(dir), Some(Node::Dir { opaque: true, .. })) && !self.hidden_in_rootfs(dir);
        if lower_visible {
            if let Ok(fd) = rootfs.open_in_root(dir, libc::O_RDONLY | libc::O_DIRECTORY) {
                use std::os::fd::AsRawFd;
                use std::os::unix::fs::{DirEntryExt, FileTypeExt};
                let listing = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
                for e in listing.flatten() {
                    let Ok(name) = e.file_name().into_string() else { continue };
                    let kind = match e.file_type() {
                        Ok(t) if t.is_dir() => DT_DIR,
                        Ok(t) if t.is_symlink() => DT_LNK,
                        Ok(t) if t.is_file() => DT_REG,
                        Ok(t) if t.is_fifo() => 1,
                        Ok(t) if t.is_char_device() => 2,
                        Ok(t) if t.is_block_device() => 6,
                        Ok(t) if t.is_socket() => 12,
                        _ => 0,
                    };
                    entries.insert(name.clone(), DirEntry { name, ino: e.ino(), kind });
                }
            }
        }
        for (name, node) in self.children_in_layer(dir) {
            let entry = match node {
                Node::Whiteout => {
                    entries.remove(name);
                    continue;
                }
                Node::File(f) => DirEntry { name: name.into(), ino: lock(f).meta.ino, kind: DT_REG },
                Node::Dir { meta, .. } => DirEntry { name: name.into(), ino: meta.ino, kind: DT_DIR },
                Node::Symlink { meta, .. } => DirEntry { name: name.into(), ino: meta.ino, kind: DT_LNK },
            };
            entries.insert(name.to_string(), entry);
        }
        Ok(entries.into_values().collect())
    }

    /// rmdir.
    pub fn rmdir(&mut self, rootfs: &Rootfs, path: &str) -> Result<(), Errno> {
        if file_name(path) == "." {
            return Err(EINVAL);
        }
        let (path, found) = self.resolve(rootfs, path, false)?;
        if path == "/" {
            return Err(EBUSY);
        }
        match found {
            Found::Nothing => return Err(ENOENT),
            ref f if !self.is_dir(rootfs, &path, f) => return Err(ENOTDIR),
            _ => {}
        }
        if !self.list(rootfs, &path)?.is_empty() {
            return Err(ENOTEMPTY);
        }
        // Whiteouts below it go with it.
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
            self.budget.release(ENTRY_COST + k.len() as u64);
        }
        self.remove(rootfs, &path);
        Ok(())
    }

    /// rename (renameat2 with `noreplace` for RENAME_NOREPLACE).
    pub fn rename(&mut self, rootfs: &Rootfs, from: &str, to: &str, noreplace: bool) -> Result<(), Errno> {
        let (from, found_from) = self.resolve(rootfs, from, false)?;
        if matches!(found_from, Found::Nothing) {
            return Err(ENOENT);
        }
        let from_dir = self.is_dir(rootfs, &from, &found_from);
        let (to, found_to) = self.resolve(rootfs, to, false)?;
        if from == to {
            return Ok(());
        }
        if from == "/" || to == "/" {
            return Err(EBUSY);
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(EINVAL); // into itself
        }
        self.parent_is_dir(rootfs, &to)?;
        if !matches!(found_to, Found::Nothing) {
            if noreplace {
                return Err(EEXIST);
            }
            let to_dir = self.is_dir(rootfs, &to, &found_to);
            match (from_dir, to_dir) {
                (false, true) => return Err(EISDIR),
                (true, false) => return Err(ENOTDIR),
                (true, true) if !self.list(rootfs, &to)?.is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
        }
        let node = match found_from {
            Found::Node(n) => n,
            Found::Lower if from_dir => {
                if self.has_below(&from) || !self.list(rootfs, &from)?.is_empty() {
                    return Err(EXDEV); // a rootfs directory with contents is not moved
                }
                Node::Dir { meta: Meta::new(0o755, self.ino()), opaque: true }
            }
            Found::Lower => match rootfs.open_in_root(&from, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(fd) if is_symlink(&fd) => {
                    let target = read_link(&fd)?;
                    Node::Symlink { meta: Meta::new(0o777, self.ino()), target }
                }
                _ => Node::File(self.copy_up(rootfs, &from)?),
            },
            Found::Nothing => return Err(ENOENT),
        };
        // Move the entry and everything of this layer below it.
        if matches!(found_to, Found::Node(Node::Dir { .. }) | Found::Lower) && from_dir {
            let _ = self.rmdir(rootfs, &to);
        }
        let prefix = format!("{from}/");
        let below: Vec<(String, Node)> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        self.put(&to, node)?;
        if let Some(Node::File(f)) = self.nodes.get(&to) {
            lock(f).nlink += 1; // put() counted the replaced name off, this one on
        }
        for (k, n) in below {
            self.nodes.remove(&k);
            self.budget.release(ENTRY_COST + k.len() as u64);
            let _ = self.put(&format!("{to}/{}", &k[prefix.len()..]), n);
        }
        self.remove(rootfs, &from);
        Ok(())
    }

    /// Applies `f` to the attributes of `path`'s entry, copying it up first (a rootfs
    /// directory gets a non-opaque entry of its own; a rootfs file is copied whole).
    pub fn set_meta(
        &mut self,
        rootfs: &Rootfs,
        path: &str,
        follow: bool,
        f: impl FnOnce(&mut Meta),
    ) -> Result<(), Errno> {
        let (path, found) = self.resolve(rootfs, path, follow)?;
        match found {
            Found::Nothing | Found::Node(Node::Whiteout) => Err(ENOENT),
            Found::Node(Node::File(file)) => {
                f(&mut lock(&file).meta);
                Ok(())
            }
            Found::Node(Node::Dir { .. } | Node::Symlink { .. }) => {
                if let Some(Node::Dir { meta, .. } | Node::Symlink { meta, .. }) = self.nodes.get_mut(&path) {
                    f(meta);
                }
                Ok(())
            }
            Found::Lower if self.is_dir(rootfs, &path, &Found::Lower) => {
                let st = stat_in_root(rootfs, &path)?;
                let mut meta = Meta::new(st.st_mode, st.st_ino);
                f(&mut meta);
                self.put(&path, Node::Dir { meta, opaque: false })
            }
            Found::Lower => {
                let file = self.copy_up(rootfs, &path)?;
                f(&mut lock(&file).meta);
                Ok(())
            }
        }
    }

    /// Every entry, for the snapshot (hard links are saved as separate files).
    pub fn entries(&self) -> Vec<SavedEntry> {
        self.nodes
            .iter()
            .map(|(path, node)| {
                let (kind, mode, mtime) = match node {
                    Node::File(f) => {
                        let f = lock(f);
                        (SavedKind::File(f.data.clone()), f.meta.mode, f.meta.mtime)
                    }
                    Node::Dir { meta, opaque } => (SavedKind::Dir { opaque: *opaque }, meta.mode, meta.mtime),
                    Node::Symlink { meta, target } => (SavedKind::Symlink(target.clone()), meta.mode, meta.mtime),
                    Node::Whiteout => (SavedKind::Whiteout, 0, Time::default()),
                };
                SavedEntry { path: path.clone(), kind, mode, mtime }
            })
            .collect()
    }

    /// The layer `entries` describe, charged to `budget`.
    pub fn from_entries(entries: &[SavedEntry], budget: &MemoryBudget) -> Result<Overlay, Errno> {
        let mut o = Overlay { nodes: BTreeMap::new(), budget: budget.clone(), next_ino: AtomicU64::new(FIRST_INO) };
        for e in entries {
            let path = normalize(&e.path)?;
            let mut meta = Meta::new(e.mode, o.ino());
            meta.mtime = e.mtime;
            let node = match &e.kind {
                SavedKind::File(data) => Node::File(FileNode::new(meta, data.clone(), budget)?),
                SavedKind::Dir { opaque } => Node::Dir { meta, opaque: *opaque },
                SavedKind::Symlink(target) => Node::Symlink { meta, target: target.clone() },
                SavedKind::Whiteout => Node::Whiteout,
            };
            o.put(&path, node)?;
        }
        Ok(o)
    }
}

/// Splits a symlink target into components (`..` kept: resolution applies it).
fn components_raw(target: &str) -> Vec<&str> {
    target.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

fn is_symlink(fd: &std::os::fd::OwnedFd) -> bool {
    stat_fd(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

fn stat_fd(fd: &std::os::fd::OwnedFd) -> Result<libc::stat, Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd we own into a properly sized struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

fn stat_in_root(rootfs: &Rootfs, path: &str) -> Result<libc::stat, Errno> {
    stat_fd(&rootfs.open_in_root(path, libc::O_PATH)?)
}

fn read_link(fd: &std::os::fd::OwnedFd) -> Result<String, Errno> {
    use std::os::fd::AsRawFd;
    let mut out = vec![0u8; crate::files::PATH_MAX];
    // SAFETY: readlinkat on an fd we own with an empty path into a buffer of its size.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    out.truncate(n as usize);
    String::from_utf8(out).map_err(|_| EINVAL)
}

/// An open regular file of this layer (what `dup` shares): the file, its offset and flags.
#[derive(Debug)]
pub struct OpenOverlayFile {
    pub file: SharedFile,
    /// Its path when opened (for `*at` calls relative to it and /proc/self/fd).
    pub path: String,
    /// The open flags (access mode, O_APPEND...).
    pub flags: i32,
    pos: Mutex<u64>,
}

impl OpenOverlayFile {
    pub fn new(file: SharedFile, path: String, flags: i32) -> Arc<OpenOverlayFile> {
        Arc::new(OpenOverlayFile { file, path, flags, pos: Mutex::new(0) })
    }

    pub fn readable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_WRONLY && self.flags & libc::O_PATH == 0
    }

    pub fn writable(&self) -> bool {
        matches!(self.flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR) && self.flags & libc::O_PATH == 0
    }

    pub fn file(&self) -> MutexGuard<'_, FileNode> {
        lock(&self.file)
    }

    pub fn pos(&self) -> MutexGuard<'_, u64> {
        lock(&self.pos)
    }

    /// read(2) at the file offset.
    pub fn read(&self, dst: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(EBADF);
        }
        let mut pos = self.pos();
        let n = self.file().read_at(*pos, dst);
        *pos += n as u64;
        Ok(n)
    }

    /// write(2) at the file offset (at the end with O_APPEND).
    pub fn write(&self, src: &[u8]) -> Result<usize, Errno> {
        if !self.writable() {
            return Err(EBADF);
        }
        let mut pos = self.pos();
        let mut file = self.file();
        if self.flags & libc::O_APPEND != 0 {
            *pos = file.len();
        }
        let n = file.write_at(*pos, src)?;
        *pos += n as u64;
        Ok(n)
    }
}

/// An open directory whose listing merges this layer with the rootfs (taken at open and at
/// every rewind).
#[derive(Debug)]
pub struct OpenDir {
    /// Its path (resolved).
    pub path: String,
    pub flags: i32,
    /// The listing and how far getdents has read it.
    pub listing: Mutex<(Vec<DirEntry>, usize)>,
}

impl OpenDir {
    pub fn new(path: String, flags: i32, entries: Vec<DirEntry>) -> Arc<OpenDir> {
        Arc::new(OpenDir { path, flags, listing: Mutex::new((entries, 0)) })
    }

    pub fn listing(&self) -> MutexGuard<'_, (Vec<DirEntry>, usize)> {
        lock(&self.listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> (std::path::PathBuf, Rootfs) {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "snapcall-overlay-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("etc/sub")).unwrap();
        std::fs::write(dir.join("etc/passwd"), b"root\n").unwrap();
        std::fs::write(dir.join("etc/sub/x"), b"x").unwrap();
        let root = Rootfs::open(&dir).unwrap();
        (dir, root)
    }

    #[test]
    fn paths_normalise_lexically_and_long_names_are_refused() {
        assert_eq!(normalize("/a/./b/../c//").unwrap(), "/a/c");
        assert_eq!(normalize("/../..").unwrap(), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(file_name("/a/b"), "b");
        assert_eq!(normalize(&format!("/{}", "n".repeat(256))), Err(ENAMETOOLONG));
    }

    #[test]
    fn writes_copy_up_removals_white_out_and_the_rootfs_is_never_touched() {
        let (dir, root) = rootfs();
        let budget = MemoryBudget::new(1 << 20);
        let mut o = Overlay::new(&budget);
        let (path, found) = o.resolve(&root, "/etc/passwd", true).unwrap();
        assert!(matches!(found, Found::Lower));
        let f = o.file_for_write(&root, &path, &found).unwrap();
        lock(&f).write_at(5, b"user\n").unwrap();
        assert_eq!(lock(&f).bytes(), b"root\nuser\n");
        assert_eq!(std::fs::read(dir.join("etc/passwd")).unwrap(), b"root\n", "the rootfs is unchanged");
        o.unlink(&root, "/etc/sub/x").unwrap();
        assert!(matches!(o.resolve(&root, "/etc/sub/x", true).unwrap().1, Found::Nothing));
        assert!(dir.join("etc/sub/x").exists());
        assert_eq!(o.list(&root, "/etc/sub").unwrap(), vec![]);
        o.rmdir(&root, "/etc/sub").unwrap();
        let names: Vec<String> = o.list(&root, "/etc").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["passwd"]);
        assert_eq!(o.rmdir(&root, "/etc"), Err(ENOTEMPTY));
        o.mkdir(&root, "/etc/sub", 0o755).unwrap();
        assert_eq!(o.list(&root, "/etc/sub").unwrap(), vec![], "a directory made again is empty (opaque)");
        assert_eq!(o.mkdir(&root, "/etc/sub", 0o755), Err(EEXIST));
        assert_eq!(o.mkdir(&root, "/nope/sub", 0o755), Err(ENOENT));
        assert_eq!(o.mkdir(&root, "/etc/passwd/sub", 0o755), Err(ENOTDIR));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn renames_move_entries_and_their_contents_and_symlinks_resolve() {
        let (dir, root) = rootfs();
        let budget = MemoryBudget::new(1 << 20);
        let mut o = Overlay::new(&budget);
        o.mkdir(&root, "/tmp/a", 0o700).unwrap();
        let f = o.create_file(&root, "/tmp/a/f", 0o600).unwrap();
        lock(&f).write_at(0, b"data").unwrap();
        o.rename(&root, "/tmp/a", "/tmp/b", false).unwrap();
        assert!(matches!(o.resolve(&root, "/tmp/a/f", true), Err(ENOENT)));
        assert!(matches!(o.resolve(&root, "/tmp/b/f", true).unwrap().1, Found::Node(Node::File(_))));
        o.symlink(&root, "b/f", "/tmp/link").unwrap();
        let (p, found) = o.resolve(&root, "/tmp/link", true).unwrap();
        assert_eq!(p, "/tmp/b/f");
        assert!(matches!(found, Found::Node(Node::File(_))));
        o.symlink(&root, "/etc", "/tmp/etc").unwrap();
        assert!(matches!(o.resolve(&root, "/tmp/etc/passwd", true).unwrap(), (p, Found::Lower) if p == "/etc/passwd"));
        o.symlink(&root, "loop", "/tmp/loop").unwrap();
        assert_eq!(o.resolve(&root, "/tmp/loop", true).err(), Some(ELOOP));
        assert_eq!(o.rename(&root, "/etc", "/tmp/etc2", false), Err(EXDEV));
        o.rename(&root, "/etc/passwd", "/tmp/passwd", false).unwrap();
        assert!(matches!(o.resolve(&root, "/etc/passwd", true).unwrap().1, Found::Nothing));
        assert_eq!(o.rename(&root, "/tmp/passwd", "/tmp/b", false), Err(EISDIR));
        assert_eq!(o.rename(&root, "/tmp/b", "/tmp/b/c", false), Err(EINVAL));
        o.create_file(&root, "/tmp/other", 0o600).unwrap();
        assert_eq!(o.rename(&root, "/tmp/passwd", "/tmp/other", true), Err(EEXIST));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_budget_bounds_contents_and_entries_and_a_fork_shares_contents() {
        let (dir, root) = rootfs();
        let budget = MemoryBudget::new(64 * 1024);
        let mut o = Overlay::new(&budget);
        let f = o.create_file(&root, "/tmp/big", 0o600).unwrap();
        assert_eq!(lock(&f).write_at(0, &vec![1u8; 100 * 1024]), Err(ENOSPC));
        assert_eq!(lock(&f).write_at(1 << 62, b"x"), Err(ENOSPC), "no sparse files");
        assert_eq!(lock(&f).write_at(u64::MAX - 1, b"xx"), Err(EFBIG));
        lock(&f).write_at(0, &[2u8; 1000]).unwrap();
        let mut n = 0;
        while o.mkdir(&root, &format!("/tmp/d{n}"), 0o700).is_ok() {
            n += 1;
        }
        assert!(n > 10 && budget.used() <= budget.limit());
        assert_eq!(o.mkdir(&root, "/tmp/one-more", 0o700), Err(ENOSPC));
        let entries = o.entries();
        let other = MemoryBudget::new(1 << 20);
        let copy = Overlay::from_entries(&entries, &other).unwrap();
        let Some(Node::File(cf)) = copy.get("/tmp/big") else { panic!("no copy") };
        assert!(Arc::ptr_eq(&lock(cf).data, &lock(&f).data), "contents shared until written");
        lock(cf).write_at(0, b"z").unwrap();
        assert_eq!(lock(&f).bytes()[0], 2, "a write to the copy is its own");
        assert!(Overlay::from_entries(&entries, &MemoryBudget::new(100)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
