//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events over a chunked
//! response, with selector transitions (an object leaving a selector is `DELETED` for that
//! watcher), periodic bookmarks, `timeoutSeconds`, `sendInitialEvents` and fault-injected
//! drops.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    Shared,
    errors::ApiError,
    lock,
    registry::ResourceDef,
    selectors::{FieldSelector, LabelSelector},
    server::Repr,
    store::{Change, ChangeKind, WatchRegistration},
};

/// Which objects a watcher sees.
pub(crate) struct WatchFilter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        let namespace_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns));
        namespace_ok && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event type this watcher sees for a change, if any.
    fn event_type(&self, change: &Change) -> Option<&'static str> {
        let now = self.matches(&change.object);
        match change.kind {
            ChangeKind::Added => now.then_some("ADDED"),
            ChangeKind::Deleted => now.then_some("DELETED"),
            ChangeKind::Modified => {
                let before = change.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Everything a watch request asked for.
pub(crate) struct WatchRequest {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub repr: Repr,
    pub filter: WatchFilter,
    pub bookmarks: bool,
    pub initial_events_end: bool,
    pub timeout: Option<Duration>,
    pub record_id: u64,
}

/// One open watch; produces the frames of the response body.
pub(crate) struct WatchSession {
    shared: Arc<Shared>,
    request: WatchRequest,
    pending: VecDeque<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<Arc<Change>>>,
    bookmark_every: Duration,
    next_bookmark: Instant,
    bookmark_due: bool,
    deadline: Option<Instant>,
    drop_rx: tokio::sync::watch::Receiver<u64>,
    last_rv: u64,
}

fn line(event_type: &str, object: Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

impl WatchSession {
    /// A session that sends one `ERROR` event (e.g. 410 Expired) and ends.
    pub fn error(shared: Arc<Shared>, request: WatchRequest, error: &ApiError) -> Self {
        let mut session = Self::base(shared, request, None, 0);
        session.pending.push_back(line("ERROR", error.status()));
        session
    }

    fn base(
        shared: Arc<Shared>,
        request: WatchRequest,
        rx: Option<mpsc::UnboundedReceiver<Arc<Change>>>,
        rv: u64,
    ) -> Self {
        let bookmark_every = shared.bookmark_interval;
        let drop_rx = shared.watch_epoch.subscribe();
        let deadline = request.timeout.map(|t| Instant::now() + t);
        WatchSession {
            shared,
            request,
            pending: VecDeque::new(),
            rx,
            bookmark_every,
            next_bookmark: Instant::now() + bookmark_every,
            bookmark_due: false,
            deadline,
            drop_rx,
            last_rv: rv,
        }
    }

    /// A live session from a store registration.
    pub fn start(shared: Arc<Shared>, request: WatchRequest, registration: WatchRegistration) -> Self {
        let WatchRegistration { snapshot, replay, rx, rv } = registration;
        let mut session = Self::base(shared, request, Some(rx), rv);
        if let Some(objects) = snapshot {
            for object in objects {
                if session.request.filter.matches(&object) {
                    let rendered = session.render(&object);
                    session.pending.push_back(line("ADDED", rendered));
                }
            }
            if session.request.initial_events_end {
                let bookmark = session.bookmark(rv, true);
                session.pending.push_back(bookmark);
            }
        } else {
            // A watch from a resourceVersion replays what happened since; the newest replayed
            // change is where the session stands.
            for change in replay {
                session.last_rv = session.last_rv.max(change.rv);
                if let Some(frame) = session.frame_for(&change) {
                    session.pending.push_back(frame);
                }
            }
        }
        session
    }

    fn render(&self, object: &Value) -> Value {
        let mut rendered = object.clone();
        rendered["apiVersion"] = json!(self.request.def.api_version(&self.request.version));
        rendered["kind"] = json!(self.request.def.kind);
        self.request.repr.object(rendered)
    }

    fn frame_for(&self, change: &Change) -> Option<Bytes> {
        let event_type = self.request.filter.event_type(change)?;
        Some(line(event_type, self.render(&change.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (api_version, kind) = match self.request.repr {
            Repr::Metadata => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string()),
            Repr::Full => (self.request.def.api_version(&self.request.version), self.request.def.kind.clone()),
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line("BOOKMARK", json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}))
    }

    /// A bookmark if one is due and nothing is queued that it would overtake.
    fn try_bookmark(&mut self) -> Option<Bytes> {
        if !self.bookmark_due {
            return None;
        }
        // Every change up to `rv` was queued to this session before `rv` became readable, so
        // an empty queue after reading `rv` means all of them have been sent.
        let rv = lock(&self.shared.state).current_rv();
        if self.rx.as_ref().is_some_and(|rx| !rx.is_empty()) {
            return None;
        }
        self.bookmark_due = false;
        self.last_rv = self.last_rv.max(rv);
        Some(self.bookmark(self.last_rv, false))
    }

    fn mark_dropped(&self) {
        let mut log = lock(&self.shared.log);
        if let Some(record) = log.iter_mut().rev().find(|r| r.id == self.request.record_id) {
            record.add_fault("watch dropped");
        }
    }

    /// The next body frame; `None` ends the response cleanly, `Err` aborts the connection.
    pub async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        loop {
            if self.drop_rx.has_changed().unwrap_or(false) {
                self.mark_dropped();
                return Some(Err(std::io::Error::other("watch dropped by fault injection")));
            }
            if let Some(bytes) = self.pending.pop_front() {
                return Some(Ok(Frame::data(bytes)));
            }
            let rx = self.rx.as_mut()?;
            let deadline = self.deadline;
            let bookmarks = self.request.bookmarks;
            let next_bookmark = self.next_bookmark;
            tokio::select! {
                biased;
                _ = self.drop_rx.changed() => {
                    self.mark_dropped();
                    return Some(Err(std::io::Error::other("watch dropped by fault injection")));
                }
                change = rx.recv() => {
                    let change = change?;
                    self.last_rv = self.last_rv.max(change.rv);
                    if let Some(frame) = self.frame_for(&change) {
                        self.pending.push_back(frame);
                    }
                    if let Some(bookmark) = self.try_bookmark() {
                        self.pending.push_back(bookmark);
                    }
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    self.next_bookmark = Instant::now() + self.bookmark_every;
                    self.bookmark_due = true;
                    if let Some(bookmark) = self.try_bookmark() {
                        self.pending.push_back(bookmark);
                    }
                }
                _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => {
                    return None;
                }
            }
        }
    }
}
