//! OCI images into snapcall bundles.
//!
//! An image is found by its reference (`docker.io/functions/alpine:latest`) in a local image
//! store: OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/...`, what
//! `skopeo copy ... oci:DIR:TAG` and `umoci` write) or OCI archives (a tar of such a layout).
//! Every blob's digest and size are checked before it is parsed; the layers are then unpacked
//! in order into a rootfs, whiteouts honoured, with every write made through
//! `openat2(RESOLVE_IN_ROOT)` so no entry of a hostile layer can reach outside the rootfs
//! (`unpack.rs` lists what is refused and what is neutralised).
//!
//! - [`reference`]: image references, normalised as Docker does.
//! - [`store`]: where a reference is looked up.
//! - [`layout`]: one image layout: index, manifest, config, blobs (digests verified).
//! - [`unpack`]: layers into a rootfs, safely.
//! - [`program`]: the program to run, found in the rootfs; static or dynamic.
//! - [`error`]: what can go wrong, each with a client-facing kind.

pub mod error;
pub mod layout;
pub mod program;
pub mod reference;
pub mod store;
pub mod unpack;

pub use error::{ErrorKind, OciError};
pub use layout::{Image, ImageConfig};
pub use program::{elf_linking, find_program, Linking};
pub use reference::ImageRef;
pub use store::ImageStore;
pub use unpack::{unpack_image, write_file_in_root, UnpackLimits, UnpackReport};
