//! Hostile and ordinary layers, built here byte by byte, unpacked into a scratch rootfs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;
use crate::layout::{self, Image};
use crate::reference::ImageRef;

/// One tar entry, its name and link name written raw (the `tar` builder would refuse the
/// hostile ones).
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
}

pub(crate) fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry { name: name.as_bytes(), kind: tar::EntryType::Regular, link: b"", data, mode: 0o644 }
}
pub(crate) fn dir(name: &str) -> Entry<'_> {
    Entry { name: name.as_bytes(), kind: tar::EntryType::Directory, link: b"", data: b"", mode: 0o755 }
}
pub(crate) fn symlink<'a>(name: &'a str, target: &'a str) -> Entry<'a> {
    Entry { name: name.as_bytes(), kind: tar::EntryType::Symlink, link: target.as_bytes(), data: b"", mode: 0o777 }
}
pub(crate) fn hardlink<'a>(name: &'a str, target: &'a str) -> Entry<'a> {
    Entry { name: name.as_bytes(), kind: tar::EntryType::Link, link: target.as_bytes(), data: b"", mode: 0o644 }
}

pub(crate) fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..e.name.len()].copy_from_slice(e.name);
            g.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

pub(crate) fn scratch(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("oci-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

/// Writes an OCI layout at `layout` whose image `tag` has these layers (tar bytes, gzip
/// them or not) and this config; returns the resolved image.
pub(crate) fn write_image(layout: &Path, tag: &str, layers: &[(Vec<u8>, bool)], run_config: &str) -> Image {
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for (tar, gz) in layers {
        diffs.push(format!("\"{}\"", digest(tar)));
        let blob = if *gz { gzip(tar) } else { tar.clone() };
        let mt =
            if *gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
        descs.push(format!(r#"{{"mediaType":"{mt}","digest":"{}","size":{}}}"#, put_blob(layout, &blob), blob.len()));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{run_config},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let cd = put_blob(layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let md = put_blob(layout, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
    let r = ImageRef::parse("example/img").unwrap();
    layout::resolve(layout, &r, &[tag.to_string()]).unwrap().expect("the image just written")
}

fn unpack(layers: &[(Vec<u8>, bool)]) -> (PathBuf, Result<UnpackReport, OciError>) {
    unpack_with(layers, UnpackLimits::default())
}

fn unpack_with(layers: &[(Vec<u8>, bool)], limits: UnpackLimits) -> (PathBuf, Result<UnpackReport, OciError>) {
    let base = scratch("unpack");
    let layout = base.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let image = write_image(&layout, "latest", layers, "{}");
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let r = unpack_image(&image, &rootfs, limits);
    (base, r)
}

#[test]
fn ordinary_layers_in_order_with_gzip_links_and_modes() {
    let l1 = tar_of(&[
        dir("bin"),
        Entry { mode: 0o4755, ..file("bin/busybox", b"\x7fELF busybox") },
        symlink("bin/env", "/bin/busybox"),
        symlink("bin/cat", "busybox"),
        hardlink("bin/sha512sum", "bin/busybox"),
        file("etc/motd", b"one"),
        dir("./var/./openfaas/"),
    ]);
    let l2 = tar_of(&[file("etc/motd", b"two"), file("/etc/abs", b"abs is relative")]);
    let (base, r) = unpack(&[(l1, true), (l2, false)]);
    let rep = r.unwrap();
    let root = base.join("rootfs");
    assert_eq!((rep.layers, rep.files, rep.symlinks, rep.hardlinks), (2, 4, 2, 1));
    assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"two");
    assert_eq!(std::fs::read(root.join("etc/abs")).unwrap(), b"abs is relative");
    assert_eq!(std::fs::read_link(root.join("bin/env")).unwrap(), Path::new("/bin/busybox"));
    let mode = std::fs::metadata(root.join("bin/busybox")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid cleared");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("bin/sha512sum")).unwrap().ino(),
        std::fs::metadata(root.join("bin/busybox")).unwrap().ino()
    );
    assert!(root.join("var/openfaas").is_dir());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn whiteouts_remove_lower_entries_and_opaque_keeps_this_layers() {
    let l1 = tar_of(&[file("a/x", b"x"), file("a/y", b"y"), file("b/keep", b"k"), file("b/gone", b"g"), dir("c/sub")]);
    let l2 = tar_of(&[
        file("a/new-before", b"n"),
        Entry { kind: tar::EntryType::Regular, ..file("a/.wh..wh..opq", b"") },
        file("a/new-after", b"n"),
        file("b/.wh.gone", b""),
        file(".wh.c", b""),
        file("b/.wh.never-existed", b""),
    ]);
    let (base, r) = unpack(&[(l1, false), (l2, true)]);
    let rep = r.unwrap();
    let root = base.join("rootfs");
    assert_eq!(rep.whiteouts, 4);
    let mut a: Vec<_> = std::fs::read_dir(root.join("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
    a.sort();
    assert_eq!(a, ["new-after", "new-before"]);
    assert!(root.join("b/keep").exists() && !root.join("b/gone").exists() && !root.join("b/.wh.gone").exists());
    assert!(!root.join("c").exists());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn dot_dot_paths_are_refused() {
    for name in ["../escape", "a/../../escape", "./../../../../tmp/escape"] {
        let (base, r) = unpack(&[(tar_of(&[file(name, b"pwned")]), false)]);
        let e = r.unwrap_err();
        assert!(matches!(e, OciError::UnsafeEntry { .. }) && e.to_string().contains(".."), "{name}: {e}");
        assert!(!base.join("escape").exists() && !Path::new("/tmp/escape").exists());
        std::fs::remove_dir_all(base).unwrap();
    }
}

#[test]
fn writes_through_symlinks_stay_inside_the_rootfs() {
    let base_outside = scratch("outside");
    let outside = base_outside.display().to_string();
    // Through a symlink to an absolute path and one climbing out with '..': both resolve
    // inside the rootfs, as they do for the guest.
    let l = tar_of(&[
        dir("etc"),
        symlink("etc2", "/etc"),
        file("etc2/through-abs", b"inside"),
        symlink("up", "../../../../../../../../.."),
        file(&format!("up{outside}/planted"), b"inside too"),
        dir("up/made-through-up"),
    ]);
    let (base, r) = unpack(&[(l, false)]);
    r.unwrap();
    let root = base.join("rootfs");
    assert_eq!(std::fs::read(root.join("etc/through-abs")).unwrap(), b"inside");
    assert_eq!(std::fs::read(root.join(outside.trim_start_matches('/')).join("planted")).unwrap(), b"inside too");
    assert!(root.join("made-through-up").is_dir());
    assert_eq!(std::fs::read_dir(&base_outside).unwrap().count(), 0, "nothing written outside");
    std::fs::remove_dir_all(base).unwrap();

    // A symlink to a host directory that does not exist in the rootfs: a write through it is
    // refused (there is no directory there to write into), and the host is untouched.
    for entries in [
        vec![symlink("evil", &outside), file("evil/planted", b"pwned")],
        vec![symlink("evil", &outside), dir("evil/sub")],
        vec![symlink("evil", &outside), symlink("evil/l", "/")],
    ] {
        let (base, r) = unpack(&[(tar_of(&entries), false)]);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(std::fs::read_dir(&base_outside).unwrap().count(), 0, "nothing written outside");
        std::fs::remove_dir_all(base).unwrap();
    }
    std::fs::remove_dir_all(base_outside).unwrap();
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let outside = scratch("victim");
    let victim = outside.join("victim");
    std::fs::write(&victim, b"original").unwrap();
    let v = victim.display().to_string();
    let l = tar_of(&[symlink("etc/passwd", &v), file("etc/passwd", b"pwned")]);
    let (base, r) = unpack(&[(l, true)]);
    r.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"original");
    assert_eq!(std::fs::read(base.join("rootfs/etc/passwd")).unwrap(), b"pwned");
    std::fs::remove_dir_all(base).unwrap();
    std::fs::remove_dir_all(outside).unwrap();
}

#[test]
fn hardlinks_out_of_the_rootfs_or_to_links_are_refused() {
    let outside = scratch("hl");
    std::fs::write(outside.join("secret"), b"host secret").unwrap();
    let abs = outside.join("secret").display().to_string();
    for (entries, why) in [
        (vec![hardlink("x", "../../../../etc/passwd")], ".."),
        (vec![hardlink("x", &abs)], "not"),
        (vec![symlink("s", &abs), hardlink("x", "s")], "regular"),
        (vec![symlink("d", outside.to_str().unwrap()), hardlink("x", "d/secret")], "not"),
        (vec![dir("adir"), hardlink("x", "adir")], "regular"),
    ] {
        let (base, r) = unpack(&[(tar_of(&entries), false)]);
        let e = r.unwrap_err();
        assert!(matches!(e, OciError::UnsafeEntry { .. }) && e.to_string().contains(why), "{e}");
        assert!(!base.join("rootfs/x").exists());
        std::fs::remove_dir_all(base).unwrap();
    }
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
    std::fs::remove_dir_all(outside).unwrap();
}

#[test]
fn device_nodes_and_fifos_are_skipped() {
    let l = tar_of(&[
        Entry { name: b"dev/kmem", kind: tar::EntryType::Char, link: b"", data: b"", mode: 0o666 },
        Entry { name: b"dev/sda", kind: tar::EntryType::Block, link: b"", data: b"", mode: 0o666 },
        Entry { name: b"fifo", kind: tar::EntryType::Fifo, link: b"", data: b"", mode: 0o666 },
        file("ok", b"ok"),
    ]);
    let (base, r) = unpack(&[(l, false)]);
    let rep = r.unwrap();
    assert_eq!((rep.skipped_special, rep.files), (3, 1));
    assert!(!base.join("rootfs/dev/kmem").exists() && !base.join("rootfs/fifo").exists());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn size_caps_stop_big_files_and_gzip_bombs() {
    // 64 MiB of zeros compresses to ~64 KiB: a bomb against a 1 MiB cap.
    let zeros = vec![0u8; 64 << 20];
    let l = tar_of(&[file("bomb", &zeros)]);
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 100 };
    let (base, r) = unpack_with(&[(l, true)], limits);
    assert!(matches!(r, Err(OciError::TooBig { .. })), "{r:?}");
    let written = std::fs::metadata(base.join("rootfs/bomb")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 1 << 20, "{written}");
    std::fs::remove_dir_all(base).unwrap();

    let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry> = many.iter().map(|n| file(n, b"")).collect();
    let (base, r) = unpack_with(&[(tar_of(&entries), false)], UnpackLimits { max_bytes: 1 << 20, max_entries: 10 });
    assert!(matches!(r, Err(OciError::TooBig { .. })), "{r:?}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn a_tampered_blob_or_diff_id_is_refused_before_use() {
    let base = scratch("tamper");
    let layout = base.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let image = write_image(&layout, "latest", &[(tar_of(&[file("f", b"good")]), true)], "{}");
    // Same size, different bytes.
    let blob = layout::blob_path(&layout, &image.layers[0].digest).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let e = unpack_image(&image, &rootfs, UnpackLimits::default()).unwrap_err();
    assert!(matches!(e, OciError::DigestMismatch { .. }), "{e}");
    assert!(!rootfs.join("f").exists(), "nothing unpacked from an unverified blob");

    // A config whose diff_id does not match what the (verified) blob unpacks to.
    let mut image = write_image(&layout, "latest", &[(tar_of(&[file("f", b"good")]), true)], "{}");
    image.diff_ids[0] = format!("sha256:{}", "0".repeat(64));
    let e = unpack_image(&image, &rootfs, UnpackLimits::default()).unwrap_err();
    assert!(e.to_string().contains("diff_id"), "{e}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn not_a_tar_and_zstd_are_clear_errors() {
    let (base, r) = unpack(&[(b"this is not a tar archive at all, just text".repeat(20), false)]);
    assert!(matches!(r, Err(OciError::BadImage { .. })), "{r:?}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn the_image_config_is_read() {
    let base = scratch("config");
    let image = write_image(
        &base,
        "v1",
        &[(tar_of(&[file("x", b"")]), false)],
        r#"{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/usr/bin:/bin","A=1"],"WorkingDir":"/home"}"#,
    );
    assert_eq!(image.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(image.config.cmd, ["echo hi"]);
    assert_eq!(image.config.env, ["PATH=/usr/bin:/bin", "A=1"]);
    assert_eq!(image.config.working_dir, "/home");
    assert_eq!(image.config.architecture, "amd64");
    // Another tag is not this image.
    let r = ImageRef::parse("example/img:v2").unwrap();
    assert!(layout::resolve(&base, &r, &["v2".into()]).unwrap().is_none());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn programs_are_found_on_the_path_inside_the_rootfs_and_classified() {
    let base = scratch("program");
    let root = base.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    // A minimal static ELF header (no program headers) and a dynamic one (one PT_INTERP).
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    (elf[4], elf[5]) = (2, 1);
    elf[18] = 62;
    let mut dynamic = elf.clone();
    dynamic[32] = 64; // phoff
    dynamic[54] = 56; // phentsize
    dynamic[56] = 1; // phnum
    dynamic.extend_from_slice(&[3, 0, 0, 0]);
    dynamic.resize(64 + 56, 0);
    std::fs::write(root.join("bin/busybox"), &elf).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("bin/env")).unwrap();
    std::fs::write(root.join("usr/bin/dyn"), &dynamic).unwrap();
    std::fs::write(root.join("usr/bin/script"), b"#!/bin/sh\necho hi\n").unwrap();
    // A symlink to the host's /bin/sh must not be what is found.
    std::os::unix::fs::symlink("/etc/hostname-not-in-rootfs", root.join("bin/hostish")).unwrap();

    assert_eq!(crate::find_program(&root, "env", None, "/").unwrap(), "/bin/env");
    assert_eq!(crate::find_program(&root, "dyn", Some("/nope:/usr/bin"), "/").unwrap(), "/usr/bin/dyn");
    assert_eq!(crate::find_program(&root, "./busybox", None, "/bin").unwrap(), "/bin/busybox");
    assert!(crate::find_program(&root, "hostish", None, "/").is_err());
    assert!(crate::find_program(&root, "sh", None, "/").is_err());
    assert_eq!(crate::elf_linking(&root, "/bin/env").unwrap(), crate::Linking::Static);
    assert_eq!(crate::elf_linking(&root, "/usr/bin/dyn").unwrap(), crate::Linking::Dynamic);
    assert!(crate::elf_linking(&root, "/usr/bin/script").unwrap_err().to_string().contains("script"));

    // Secrets go in through the same in-root writer, even where the image planted a link.
    let outside = scratch("secret-outside");
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/openfaas")).unwrap();
    let r = crate::write_file_in_root(&root, Path::new("var/openfaas/secrets/s"), b"v", 0o444);
    assert!(r.is_err(), "a dangling in-root link is not a directory");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    std::fs::remove_file(root.join("var/openfaas")).unwrap();
    crate::write_file_in_root(&root, Path::new("/var/openfaas/secrets/s"), b"v", 0o444).unwrap();
    assert_eq!(std::fs::read(root.join("var/openfaas/secrets/s")).unwrap(), b"v");
    std::fs::remove_dir_all(base).unwrap();
    std::fs::remove_dir_all(outside).unwrap();
}
