//! What can go wrong with a snapshot, as data (the front end words it).

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store's location is not one this build understands.
    #[error("invalid snapshot store {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// The object store refused or failed an operation.
    #[error("snapshot store: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The archiver (GNU tar) failed.
    #[error("{context}: tar failed ({status}): {stderr}")]
    Archiver { context: String, status: String, stderr: String },
    /// A manifest in the store cannot be read.
    #[error("the manifest of actor {actor} is unreadable: {reason}")]
    BadManifest { actor: String, reason: String },
    /// An actor id the store cannot hold (ids name objects).
    #[error("invalid actor id for a snapshot: {0:?}")]
    InvalidActorId(String),
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Store { context, source }
}
