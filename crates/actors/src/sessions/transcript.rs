//! Writing and reading sessions' durable records and transcripts (the VM's own SQLite file,
//! `agentvm_store::sessions`), off the async workers.

use std::sync::Arc;

use agentvm_store::{SessionEvent, SessionRecord};

use crate::actors::blocking;
use crate::error::ActorError;
use crate::events::store::EventFile;

/// A VM's session records and transcripts.
#[derive(Clone)]
pub struct Transcript {
    file: Arc<EventFile>,
}

impl Transcript {
    pub(crate) fn new(file: Arc<EventFile>) -> Transcript {
        Transcript { file }
    }

    /// Appends one event to a session's transcript; durable when it returns. Its number, or
    /// `None` when the transcript is full (`agentvm_store::sessions`' limits: the event is still
    /// broadcast, not kept).
    pub async fn append(&self, session_id: &str, event: String) -> Result<Option<u64>, ActorError> {
        let (file, id) = (Arc::clone(&self.file), session_id.to_string());
        let now = crate::actors::now_ms();
        let numbers = blocking(move || file.with(true, |s| s.append_session_events(&id, &[(event, now)]))).await??;
        Ok(numbers.first().copied())
    }

    pub async fn put(&self, record: SessionRecord, keep_open: bool) -> Result<(), ActorError> {
        let file = Arc::clone(&self.file);
        Ok(blocking(move || file.with(keep_open, |s| s.put_session(&record))).await??)
    }

    pub async fn records(&self, keep_open: bool) -> Result<Vec<SessionRecord>, ActorError> {
        let file = Arc::clone(&self.file);
        Ok(blocking(move || file.with(keep_open, |s| s.sessions())).await??)
    }

    pub async fn record(&self, session_id: &str, keep_open: bool) -> Result<Option<SessionRecord>, ActorError> {
        let (file, id) = (Arc::clone(&self.file), session_id.to_string());
        Ok(blocking(move || file.with(keep_open, |s| s.session(&id))).await??)
    }

    pub async fn events(
        &self,
        session_id: &str,
        after: Option<u64>,
        limit: usize,
        keep_open: bool,
    ) -> Result<Vec<SessionEvent>, ActorError> {
        let (file, id) = (Arc::clone(&self.file), session_id.to_string());
        Ok(blocking(move || file.with(keep_open, |s| s.session_events(&id, after, limit))).await??)
    }

    pub async fn delete(&self, session_id: &str, keep_open: bool) -> Result<bool, ActorError> {
        let (file, id) = (Arc::clone(&self.file), session_id.to_string());
        Ok(blocking(move || file.with(keep_open, |s| s.delete_session(&id))).await??)
    }
}
