//! Where snapshots live, and their layout:
//!
//! ```text
//! <root>/actors/<actor>/manifest.json              the newest snapshot (written last)
//! <root>/actors/<actor>/<sequence>/<part>.tar      its parts (state, upper)
//! ```
//!
//! `<actor>` is the engine's actor id, stable across hosts and restarts. A snapshot's parts
//! are uploaded first and its manifest after them, so a reader never sees a manifest whose
//! parts are missing; the parts of the previous snapshot are deleted after the new manifest is
//! written (a reader holding the old manifest may then fail and read the manifest again).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::error::{io, store, SnapshotError};
use crate::manifest::{Manifest, FORMAT};

/// A bucket or directory of snapshots.
#[derive(Clone)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    location: String,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore").field("location", &self.location).finish()
    }
}

impl SnapshotStore {
    /// Opens the store at `location`: `s3://bucket[/prefix]` (credentials, region and endpoint
    /// from the usual `AWS_*` variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for one
    /// without TLS), or a local directory (`file:///path` or an absolute path; made if missing).
    pub fn open(location: &str) -> Result<SnapshotStore, SnapshotError> {
        Self::open_with(location, [])
    }

    /// [`SnapshotStore::open`], with S3 settings given here over the `AWS_*` variables, by
    /// their `object_store` names (`aws_endpoint`, `aws_access_key_id`, `aws_allow_http`...).
    pub fn open_with(
        location: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SnapshotStore, SnapshotError> {
        let invalid = |reason: String| SnapshotError::InvalidLocation { location: location.to_string(), reason };
        if location.starts_with("s3://") {
            let url = url::Url::parse(location).map_err(|e| invalid(e.to_string()))?;
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(location);
            for (key, value) in options {
                let key: object_store::aws::AmazonS3ConfigKey =
                    key.parse().map_err(|e: object_store::Error| invalid(e.to_string()))?;
                builder = builder.with_config(key, value);
            }
            let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
            let root = ObjectPath::parse(url.path().trim_matches('/')).map_err(|e| invalid(e.to_string()))?;
            return Ok(SnapshotStore { store: Arc::new(s3), root, location: location.to_string() });
        }
        let dir = location.strip_prefix("file://").unwrap_or(location);
        if !dir.starts_with('/') {
            return Err(invalid("expected s3://bucket[/prefix], file:///path or an absolute path".into()));
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating the snapshot directory {dir}")))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| invalid(e.to_string()))?;
        Ok(SnapshotStore { store: Arc::new(local), root: ObjectPath::default(), location: location.to_string() })
    }

    /// Where the store is, as configured (for logs and `/health`).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn actor_dir(&self, actor: &str) -> Result<ObjectPath, SnapshotError> {
        let valid = !actor.is_empty()
            && actor.len() <= 128
            && actor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SnapshotError::InvalidActorId(actor.to_string()));
        }
        Ok(self.root.child("actors").child(actor))
    }

    fn part_path(&self, actor: &str, sequence: u64, part: &str) -> Result<ObjectPath, SnapshotError> {
        Ok(self.actor_dir(actor)?.child(format!("{sequence:020}")).child(format!("{part}.tar")))
    }

    /// The newest snapshot of `actor`, if it has one.
    pub async fn latest(&self, actor: &str) -> Result<Option<Manifest>, SnapshotError> {
        let path = self.actor_dir(actor)?.child("manifest.json");
        let bytes = match self.store.get(&path).await {
            Ok(found) => found.bytes().await.map_err(store(format!("reading {path}")))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store(format!("reading {path}"))(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| SnapshotError::BadManifest { actor: actor.to_string(), reason: e.to_string() })?;
        if manifest.format != FORMAT {
            return Err(SnapshotError::BadManifest {
                actor: actor.to_string(),
                reason: format!("format {} (this agentvm reads format {FORMAT})", manifest.format),
            });
        }
        Ok(Some(manifest))
    }

    /// Stores a new snapshot of `actor`: uploads `files` (part name, archive file) under
    /// `manifest.sequence`, then the manifest, then deletes the parts of `previous` (the
    /// snapshot it replaces).
    pub async fn put(
        &self,
        actor: &str,
        manifest: &Manifest,
        files: &[(&str, &Path)],
        previous: Option<&Manifest>,
    ) -> Result<(), SnapshotError> {
        for (part, file) in files {
            let path = self.part_path(actor, manifest.sequence, part)?;
            self.upload(file, &path).await?;
        }
        let path = self.actor_dir(actor)?.child("manifest.json");
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| io("encoding a manifest")(e.into()))?;
        self.store.put(&path, PutPayload::from(json)).await.map_err(store(format!("writing {path}")))?;
        if let Some(previous) = previous.filter(|p| p.sequence != manifest.sequence) {
            for part in &previous.parts {
                let path = self.part_path(actor, previous.sequence, &part.name)?;
                if let Err(e) = self.store.delete(&path).await {
                    tracing::warn!(%path, "deleting an old snapshot part: {e}");
                }
            }
        }
        Ok(())
    }

    /// Uploads a local file (in parts, for large ones).
    async fn upload(&self, file: &Path, path: &ObjectPath) -> Result<(), SnapshotError> {
        let mut source = tokio::fs::File::open(file).await.map_err(io(format!("opening {}", file.display())))?;
        let mut writer = object_store::buffered::BufWriter::new(Arc::clone(&self.store), path.clone());
        let copied = tokio::io::copy(&mut source, &mut writer).await;
        match copied {
            Ok(_) => writer.shutdown().await.map_err(io(format!("uploading {path}"))),
            Err(e) => {
                let _ = writer.abort().await;
                Err(io(format!("uploading {path}"))(e))
            }
        }
    }

    /// The bytes of one part of a snapshot, as they arrive.
    pub async fn part(
        &self,
        actor: &str,
        manifest: &Manifest,
        part: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, SnapshotError>>, SnapshotError> {
        let path = self.part_path(actor, manifest.sequence, part)?;
        let found = self.store.get(&path).await.map_err(store(format!("reading {path}")))?;
        let context = format!("reading {path}");
        Ok(found.into_stream().map_err(move |e| store(context.clone())(e)).boxed())
    }

    /// Deletes every snapshot of `actor` (it was destroyed).
    pub async fn remove(&self, actor: &str) -> Result<(), SnapshotError> {
        let dir = self.actor_dir(actor)?;
        let objects: Vec<ObjectPath> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(store(format!("listing {dir}")))?;
        // The manifest first: a half-removed snapshot is never taken for a whole one.
        let manifest = dir.child("manifest.json");
        let (first, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|p| *p == manifest);
        for path in first.into_iter().chain(rest) {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store(format!("deleting {path}"))(e)),
            }
        }
        Ok(())
    }
}
