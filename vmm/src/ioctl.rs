//! The one error for a failed KVM ioctl, used by every module that makes them: which ioctl,
//! and the kernel's own error ("Too many open files (os error 24)" says what to fix).

/// A KVM ioctl failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{ioctl} failed: {source}")]
pub struct IoctlError {
    /// The ioctl, as the kernel's headers name it (`KVM_RUN`, `KVM_SET_SREGS`, ...).
    pub ioctl: &'static str,
    /// What the kernel returned.
    #[source]
    pub source: kvm_ioctls::Error,
}

impl IoctlError {
    /// The kernel's errno.
    pub fn errno(&self) -> i32 {
        self.source.errno()
    }
}

/// For `map_err`: names the ioctl a `kvm_ioctls` call made.
pub(crate) fn ioctl(name: &'static str) -> impl Fn(kvm_ioctls::Error) -> IoctlError {
    move |source| IoctlError { ioctl: name, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_ioctl_and_carries_the_kernels_error() {
        let e = ioctl("KVM_CREATE_VM")(kvm_ioctls::Error::new(libc::EMFILE));
        assert_eq!(e.errno(), libc::EMFILE);
        assert!(e.to_string().starts_with("KVM_CREATE_VM failed: Too many open files"), "{e}");
        let source = std::error::Error::source(&e).expect("the kernel's error is the source");
        assert_eq!(source.to_string(), std::io::Error::from_raw_os_error(libc::EMFILE).to_string());
    }
}
