//! Snapshot capture and restore (being written: issue 3).

use crate::call::ReadyCall;
use crate::function::Function;
use crate::vm::EmptyVm;

/// Why a snapshot could not be taken, opened or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshots are not implemented yet")]
    NotYet,
}

/// An opened snapshot.
pub struct SnapshotImage;

impl SnapshotImage {
    pub(crate) fn open_for(_f: &Function) -> Result<Option<SnapshotImage>, SnapshotError> {
        Ok(None)
    }
    pub(crate) fn restore(&self, _f: &Function, _vm: EmptyVm, _req: &[u8]) -> Result<ReadyCall, SnapshotError> {
        Err(SnapshotError::NotYet)
    }
}
