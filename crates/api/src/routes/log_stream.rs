//! A build's log as Server-Sent Events, for `envstore submit --wait`, the
//! web UI and `curl -N`: lines as the worker writes them, the build's state
//! whenever it moves to another phase, and an `end` event when it is over.
//!
//! Lines come from the live log of a build running in this process. A build
//! running on another node still reports its state and phases as they
//! change (they are in the database), and its lines arrive when it ends,
//! from the published log.
//!
//! A stream holds a connection and polls the database, so each caller may
//! keep only [`EventStreamLimits::per_caller`] open at once, a stream ends
//! after [`EventStreamLimits::max_duration`] (the client reconnects or
//! polls), the caller's credential and access are checked again every
//! [`EventStreamLimits::recheck`] (a revoked token's streams end), and every
//! stream ends when the server shuts down. A stream that ends for any of
//! these reasons sends a `closed` event saying why, never `end`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use envstore_core::Role;
use envstore_db::BuildRecord;
use envstore_store::{StoreError, keys};
use futures::Stream;
use serde_json::json;

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// Limits on the build event streams of one API process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStreamLimits {
    /// Streams one caller (one subject; all anonymous callers together) may
    /// have open at once; one more is refused with 429.
    pub per_caller: usize,
    /// How long one stream lasts at most.
    pub max_duration: Duration,
    /// How often a stream checks that its caller's token still works and
    /// still lets it see the build.
    pub recheck: Duration,
}

/// Streams per caller unless configured otherwise.
pub const DEFAULT_STREAMS_PER_CALLER: usize = 8;
/// A stream's longest life unless configured otherwise.
pub const DEFAULT_STREAM_DURATION: Duration = Duration::from_secs(3600);
/// How often a stream rechecks its caller unless configured otherwise.
pub const DEFAULT_STREAM_RECHECK: Duration = Duration::from_secs(5);

impl Default for EventStreamLimits {
    fn default() -> Self {
        Self {
            per_caller: DEFAULT_STREAMS_PER_CALLER,
            max_duration: DEFAULT_STREAM_DURATION,
            recheck: DEFAULT_STREAM_RECHECK,
        }
    }
}

/// The event streams open in this process, counted per caller, and the
/// signal that ends them all when the server shuts down (a graceful
/// shutdown waits for open connections).
pub struct EventStreams {
    limits: EventStreamLimits,
    open: Mutex<HashMap<String, usize>>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl EventStreams {
    pub fn new(limits: EventStreamLimits) -> Self {
        Self {
            limits,
            open: Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn limits(&self) -> EventStreamLimits {
        self.limits
    }

    /// Ends every open stream, and every one opened from now on.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for EventStreams {
    fn default() -> Self {
        Self::new(EventStreamLimits::default())
    }
}

/// One open stream of a caller; dropping it (the stream ended or the client
/// went away) frees the place.
struct StreamSlot {
    app: AppState,
    caller: String,
}

impl StreamSlot {
    fn take(app: &AppState, caller: &Caller) -> Result<Self, ApiError> {
        let key = caller
            .subject
            .clone()
            .unwrap_or_else(|| "anonymous".to_owned());
        let limit = app.event_streams.limits.per_caller;
        let mut counts = app.event_streams.counts();
        let open = counts.entry(key.clone()).or_default();
        if *open >= limit {
            return Err(ApiError::TooManyStreams(format!(
                "'{}' already follows {limit} build event streams, the most one caller may; close one, or poll GET /api/v1/builds/{{id}}",
                key.escape_debug()
            )));
        }
        *open += 1;
        drop(counts);
        Ok(Self {
            app: app.clone(),
            caller: key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.app.event_streams.counts();
        if let Some(open) = counts.get_mut(&self.caller) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// Who is following: what to check again while the stream lasts.
pub(crate) struct Follower {
    pub caller: Caller,
    /// The `Authorization` header the stream was opened with.
    pub authorization: Option<HeaderValue>,
    /// The namespace of the followed build.
    pub namespace: String,
}

impl Follower {
    /// Whether the credential still works and still lets its holder see
    /// the build: the same check a new request would make.
    async fn still_allowed(&self, app: &AppState) -> bool {
        let mut request = axum::http::Request::new(());
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        let (mut parts, ()) = request.into_parts();
        match Caller::from_request_parts(&mut parts, app).await {
            Ok(caller) => {
                caller.subject == self.caller.subject
                    && caller
                        .require(app, &self.namespace, Role::Viewer)
                        .await
                        .is_ok()
            }
            Err(_) => false,
        }
    }
}

/// How often a followed build is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the client has been sent so far.
struct Follow {
    app: AppState,
    build_id: String,
    follower: Follower,
    _slot: StreamSlot,
    /// When the stream must end at the latest.
    deadline: tokio::time::Instant,
    /// When the caller is checked again.
    next_check: tokio::time::Instant,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The part of the log already sent as `line` events.
    sent: String,
    /// The last `status` event's content, to send only changes.
    last_state: Option<serde_json::Value>,
    /// Events ready to go out before looking again.
    pending: std::collections::VecDeque<Event>,
    looked: bool,
    finished: bool,
}

/// The event stream of the build `build_id`, which the caller may view,
/// or 429 when the caller has as many streams open as it may.
pub(crate) fn follow_build(
    app: AppState,
    build_id: String,
    follower: Follower,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = StreamSlot::take(&app, &follower.caller)?;
    let limits = app.event_streams.limits;
    let now = tokio::time::Instant::now();
    let closing = app.event_streams.closing.subscribe();
    let follow = Follow {
        follower,
        _slot: slot,
        deadline: now + limits.max_duration,
        next_check: now + limits.recheck,
        closing,
        app,
        build_id,
        sent: String::new(),
        last_state: None,
        pending: Default::default(),
        looked: false,
        finished: false,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(event) = follow.pending.pop_front() {
                return Some((Ok(event), follow));
            }
            if follow.finished {
                return None;
            }
            if follow.looked {
                let wake = (tokio::time::Instant::now() + POLL_INTERVAL).min(follow.deadline);
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    _ = follow.closing.wait_for(|closing| *closing) => {}
                }
            }
            follow.looked = true;
            if let Some(reason) = follow.must_close().await {
                follow.close(reason);
                continue;
            }
            follow.poll().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

impl Follow {
    /// Why the stream must end now, if it must.
    async fn must_close(&mut self) -> Option<String> {
        if *self.closing.borrow() {
            return Some("the server is shutting down".to_owned());
        }
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            let limit = self.app.event_streams.limits.max_duration.as_secs();
            return Some(format!(
                "the stream reached its longest life ({limit} s); open it again to keep following"
            ));
        }
        if now >= self.next_check {
            self.next_check = now + self.app.event_streams.limits.recheck;
            if !self.follower.still_allowed(&self.app).await {
                return Some(
                    "the token was revoked or expired, or no longer grants access to this build"
                        .to_owned(),
                );
            }
        }
        None
    }

    /// Ends the stream early with a `closed` event saying why.
    fn close(&mut self, reason: String) {
        self.pending.push_back(
            Event::default()
                .event("closed")
                .data(json!({ "reason": reason }).to_string()),
        );
        self.finished = true;
    }

    async fn poll(&mut self) {
        let build = match self.app.db.build(&self.build_id).await {
            Ok(Some(build)) => build,
            Ok(None) => {
                return self.end(json!({ "status": "unknown", "error": "the build was removed" }));
            }
            Err(error) => {
                tracing::warn!(build = %self.build_id, error = %envstore_core::error_chain(&error), "cannot follow a build");
                return;
            }
        };
        let published = if build.status.is_final() {
            match self.app.store.get(&keys::build_log(&build.id)).await {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(StoreError::NotFound(_)) => None,
                Err(error) => {
                    tracing::warn!(build = %self.build_id, error = %envstore_core::error_chain(&error), "cannot read a build log");
                    None
                }
            }
        } else {
            None
        };
        self.observe(&build, published);
    }

    /// Queues what changed since the last look: new complete lines, a new
    /// state, and the end once the build is final.
    fn observe(&mut self, build: &BuildRecord, published: Option<String>) {
        let final_status = build.status.is_final();
        let log = published.or_else(|| self.app.events.live_log(&build.id));
        if let Some(log) = log {
            self.queue_lines(&log, final_status);
        }
        let current = build.phases.last();
        let state = json!({
            "status": build.status,
            "phase": current.map(|timing| timing.phase.to_string()),
            "detail": current.and_then(|timing| timing.detail.clone()),
            "phases": build.phases.len(),
        });
        if self.last_state.as_ref() != Some(&state) {
            self.pending
                .push_back(Event::default().event("status").data(state.to_string()));
            self.last_state = Some(state);
        }
        if final_status {
            self.end(json!({ "status": build.status, "error": build.error }));
        }
    }

    /// Sends the part of `log` not sent yet, whole lines only unless the
    /// build is over. A published log that does not continue what was sent
    /// (a retried build's final log) is sent whole after a `reset` event.
    fn queue_lines(&mut self, log: &str, complete: bool) {
        let new = match log.strip_prefix(self.sent.as_str()) {
            Some(new) => new,
            None => {
                self.pending.push_back(
                    Event::default()
                        .event("reset")
                        .data("the complete log follows"),
                );
                self.sent.clear();
                log
            }
        };
        let upto = if complete {
            new.len()
        } else {
            new.rfind('\n').map_or(0, |end| end + 1)
        };
        for line in new[..upto].lines() {
            // A bare carriage return would end the event early in a client.
            self.pending
                .push_back(Event::default().event("line").data(line.replace('\r', " ")));
        }
        self.sent.push_str(&new[..upto]);
    }

    fn end(&mut self, outcome: serde_json::Value) {
        self.pending
            .push_back(Event::default().event("end").data(outcome.to_string()));
        self.finished = true;
    }
}
