//! A build's log as Server-Sent Events, for `envstore submit --wait`, the
//! web UI and `curl -N`: `line` events as the worker writes them, `progress`
//! events with the typed events they are rendered from (JSON: `seq`,
//! `elapsed_seconds` and the `event`, tagged by `kind`: `phase`,
//! `downloading`, `linking`, `note`, `end`), the build's state whenever it
//! moves to another phase (`status`), and an `end` event when it is over.
//!
//! A follower is sent only what is new: of a build running in this
//! process, the events after the last one it was sent; of a build running
//! on another node, the lines its worker keeps in the database after the
//! last character it was sent (lines only); and, once the build is over,
//! what the published log adds. A build's end reaches followers at once:
//! workers announce it (PostgreSQL NOTIFY, or within the process), and one
//! listener per process wakes the streams of that build; they also look
//! again every [`EventStreams::poll_interval`] in case a word was lost.
//!
//! A stream holds a connection, so each caller may keep only
//! [`EventStreamLimits::per_caller`] open at once, a stream ends after
//! [`EventStreamLimits::max_duration`] (the client reconnects or polls),
//! the caller's credential and access are checked again every
//! [`EventStreamLimits::recheck`] (a revoked token's streams end), and every
//! stream ends when the server shuts down. A stream that ends for any of
//! these reasons sends a `closed` event saying why, never `end`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use envstore_core::{BuildStatus, ProgressEvent, ProgressRecord, Role};
use envstore_db::{AttemptLogSince, BuildRecord, Database};
use envstore_store::{StoreError, keys};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

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
    /// How often a followed build is looked at again besides when workers
    /// announce a change (a missed announcement costs at most this).
    pub poll: Duration,
}

/// Streams per caller unless configured otherwise.
pub const DEFAULT_STREAMS_PER_CALLER: usize = 8;
/// A stream's longest life unless configured otherwise.
pub const DEFAULT_STREAM_DURATION: Duration = Duration::from_secs(3600);
/// How often a stream rechecks its caller unless configured otherwise.
pub const DEFAULT_STREAM_RECHECK: Duration = Duration::from_secs(5);
/// How often a followed build is looked at again unless configured
/// otherwise: a running build's new lines and phases arrive this often.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

impl Default for EventStreamLimits {
    fn default() -> Self {
        Self {
            per_caller: DEFAULT_STREAMS_PER_CALLER,
            max_duration: DEFAULT_STREAM_DURATION,
            recheck: DEFAULT_STREAM_RECHECK,
            poll: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// The event streams open in this process, counted per caller, the signal
/// that ends them all when the server shuts down (a graceful shutdown waits
/// for open connections), and the word of builds that changed state.
pub struct EventStreams {
    limits: EventStreamLimits,
    open: Mutex<HashMap<String, usize>>,
    closing: tokio::sync::watch::Sender<bool>,
    changes: Arc<Changes>,
}

/// Builds that changed state, as one listener per process hears them
/// (`None`: some may have been missed, look at every build).
struct Changes {
    sender: broadcast::Sender<Option<String>>,
    /// Whether the listener runs; it stops when no stream is open.
    listening: AtomicBool,
}

impl EventStreams {
    pub fn new(limits: EventStreamLimits) -> Self {
        Self {
            limits,
            open: Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
            changes: Arc::new(Changes {
                sender: broadcast::channel(256).0,
                listening: AtomicBool::new(false),
            }),
        }
    }

    /// Looks at followed builds this often besides when told they changed.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.limits.poll = poll;
        self
    }

    pub fn limits(&self) -> EventStreamLimits {
        self.limits
    }

    pub fn poll_interval(&self) -> Duration {
        self.limits.poll
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

    /// Word of builds that change state, with the listener started if it
    /// is not running.
    fn subscribe(&self, db: &Database) -> broadcast::Receiver<Option<String>> {
        let receiver = self.changes.sender.subscribe();
        if !self.changes.listening.swap(true, Ordering::AcqRel) {
            tokio::spawn(forward_changes(
                db.clone(),
                self.changes.clone(),
                self.closing.subscribe(),
            ));
        }
        receiver
    }
}

impl Default for EventStreams {
    fn default() -> Self {
        Self::new(EventStreamLimits::default())
    }
}

/// How often the change listener looks whether any stream is still open.
const LISTENER_IDLE_CHECK: Duration = Duration::from_secs(30);

/// Passes what the database hears of builds changing state to the open
/// streams, while there are any. A lost connection is made again with
/// backoff; streams poll meanwhile.
async fn forward_changes(
    db: Database,
    changes: Arc<Changes>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut delay = Duration::from_secs(1);
    'listen: loop {
        if *closing.borrow() || changes.sender.receiver_count() == 0 {
            break;
        }
        match db.build_change_listener().await {
            Ok(mut listener) => {
                delay = Duration::from_secs(1);
                // Changes made while nobody listened.
                let _ = changes.sender.send(None);
                loop {
                    tokio::select! {
                        _ = closing.wait_for(|closing| *closing) => break 'listen,
                        () = tokio::time::sleep(LISTENER_IDLE_CHECK) => {
                            if changes.sender.receiver_count() == 0 {
                                break 'listen;
                            }
                        }
                        heard = listener.recv() => match heard {
                            Ok(change) => {
                                if changes.sender.send(change).is_err() {
                                    break 'listen;
                                }
                            }
                            Err(error) => {
                                tracing::warn!(error = %envstore_core::error_chain(&error), "lost the build notifications: streams poll until they are back");
                                break;
                            }
                        },
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %envstore_core::error_chain(&error), "cannot listen for build notifications: streams poll");
            }
        }
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => break,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    changes.listening.store(false, Ordering::Release);
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

/// What a stream sends, before it becomes a Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Line(String),
    Progress(ProgressRecord),
    Status(Value),
    Reset,
    End(Value),
    Closed(String),
}

impl Sent {
    fn into_event(self) -> Event {
        match self {
            // A bare carriage return would end the event early in a client.
            Self::Line(line) => Event::default().event("line").data(line.replace('\r', " ")),
            Self::Progress(record) => Event::default()
                .event("progress")
                .data(serde_json::to_string(&record).unwrap_or_default()),
            Self::Status(state) => Event::default().event("status").data(state.to_string()),
            Self::Reset => Event::default()
                .event("reset")
                .data("the complete log follows"),
            Self::End(outcome) => Event::default().event("end").data(outcome.to_string()),
            Self::Closed(reason) => Event::default()
                .event("closed")
                .data(json!({ "reason": reason }).to_string()),
        }
    }
}

/// Where a build's log came from on one look.
enum LogSource {
    /// The published log of a build that is over.
    Published(String),
    /// New events of a build running in this process, or published with
    /// the log of a build that is over.
    Live(Vec<ProgressRecord>),
    /// The whole live log as text (a build side that keeps no events).
    LiveText(String),
    /// What the worker of a build running elsewhere kept in the database
    /// after what was read before.
    Kept(AttemptLogSince),
    Nothing,
}

/// The first line of a kept log whose beginning was cut (it grew past the
/// most the database keeps): its character offsets no longer hold.
const CUT_MARK: &str = "[… earlier lines cut]";

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
    /// Word of builds changing state; None once it can no longer come.
    changes: Option<broadcast::Receiver<Option<String>>>,
    /// The lines already sent, to tell whether the published log continues
    /// them.
    sent: String,
    /// The number of the next event of the live log to send.
    next_seq: u64,
    /// Of the log kept in the database by a worker elsewhere: the attempt
    /// and the characters read so far; None once it was cut.
    kept: Option<(i64, i64)>,
    /// Whether an `end` progress event went out.
    end_sent: bool,
    /// The last `status` event's content, to send only changes.
    last_state: Option<Value>,
    /// Events ready to go out before looking again.
    pending: VecDeque<Sent>,
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
    let stream = events(app, build_id, follower)?;
    let stream = futures::StreamExt::map(stream, |sent| Ok(sent.into_event()));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What the stream of `build_id` sends, in order.
fn events(
    app: AppState,
    build_id: String,
    follower: Follower,
) -> Result<impl Stream<Item = Sent>, ApiError> {
    let slot = StreamSlot::take(&app, &follower.caller)?;
    let limits = app.event_streams.limits;
    let now = tokio::time::Instant::now();
    let closing = app.event_streams.closing.subscribe();
    let changes = app.event_streams.subscribe(&app.db);
    let follow = Follow {
        follower,
        _slot: slot,
        deadline: now + limits.max_duration,
        next_check: now + limits.recheck,
        closing,
        changes: Some(changes),
        app,
        build_id,
        sent: String::new(),
        next_seq: 0,
        kept: Some((0, 0)),
        end_sent: false,
        last_state: None,
        pending: VecDeque::new(),
        looked: false,
        finished: false,
    };
    Ok(futures::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(sent) = follow.pending.pop_front() {
                return Some((sent, follow));
            }
            if follow.finished {
                return None;
            }
            if follow.looked {
                follow.wait().await;
            }
            follow.looked = true;
            if let Some(reason) = follow.must_close().await {
                follow.close(reason);
                continue;
            }
            follow.poll().await;
        }
    }))
}

impl Follow {
    /// Waits until the build is worth looking at again: it changed, the
    /// poll interval passed, the caller is due a check, or the stream must
    /// end.
    async fn wait(&mut self) {
        let wake = (tokio::time::Instant::now() + self.app.event_streams.limits.poll)
            .min(self.deadline)
            .min(self.next_check);
        loop {
            let changes = &mut self.changes;
            let closing = &mut self.closing;
            let change = async {
                match changes {
                    Some(changes) => Some(changes.recv().await),
                    None => std::future::pending().await,
                }
            };
            let change = tokio::select! {
                () = tokio::time::sleep_until(wake) => None,
                _ = closing.wait_for(|closing| *closing) => None,
                change = change => change,
            };
            match change {
                Some(Ok(Some(build_id))) if build_id != self.build_id => {}
                Some(Err(broadcast::error::RecvError::Closed)) => self.changes = None,
                // This build, some changes were missed, or time is up.
                _ => return,
            }
        }
    }

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
        self.pending.push_back(Sent::Closed(reason));
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
        let source = self.read_log(&build).await;
        self.observe(&build, source);
    }

    /// What is new in the build's log, from wherever it is.
    async fn read_log(&mut self, build: &BuildRecord) -> LogSource {
        if build.status.is_final() {
            // The published events, unless this follower read text so far
            // (from a worker elsewhere): then the text continues it.
            if (self.sent.is_empty() || self.next_seq > 0)
                && let Some(records) = self.published_events(&build.id).await
            {
                return LogSource::Live(records);
            }
            return match self.app.store.get(&keys::build_log(&build.id)).await {
                Ok(bytes) => LogSource::Published(String::from_utf8_lossy(&bytes).into_owned()),
                Err(error) => {
                    if !matches!(error, StoreError::NotFound(_)) {
                        tracing::warn!(build = %self.build_id, error = %envstore_core::error_chain(&error), "cannot read a build log");
                    }
                    self.live_log(&build.id)
                }
            };
        }
        let live = self.live_log(&build.id);
        if !matches!(live, LogSource::Nothing) || build.status != BuildStatus::Running {
            return live;
        }
        let Some((attempt, read)) = self.kept else {
            return LogSource::Nothing;
        };
        match self.app.db.attempt_log_since(&build.id, read).await {
            // A newer attempt: its kept log starts with the earlier ones.
            Ok(Some(kept)) if kept.attempt != attempt && read > 0 => {
                match self.app.db.attempt_log_since(&build.id, 0).await {
                    Ok(Some(whole)) => LogSource::Kept(whole),
                    _ => LogSource::Nothing,
                }
            }
            Ok(Some(kept)) => LogSource::Kept(kept),
            Ok(None) => LogSource::Nothing,
            Err(error) => {
                tracing::debug!(build = %self.build_id, error = %envstore_core::error_chain(&error), "cannot read a kept build log");
                LogSource::Nothing
            }
        }
    }

    /// The typed events published with a finished build's log, from the
    /// next one this follower needs; None when there are none (a build
    /// closed at its attempt limit, or published before events were).
    async fn published_events(&self, build_id: &str) -> Option<Vec<ProgressRecord>> {
        let bytes = match self.app.store.get(&keys::build_events(build_id)).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound(_)) => return None,
            Err(error) => {
                tracing::warn!(build = %build_id, error = %envstore_core::error_chain(&error), "cannot read a build's events");
                return None;
            }
        };
        let mut records = Vec::new();
        for line in bytes
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
        {
            match serde_json::from_slice::<ProgressRecord>(line) {
                Ok(record) if record.seq >= self.next_seq => records.push(record),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(build = %build_id, %error, "a build's published events do not parse: sending its text log");
                    return None;
                }
            }
        }
        Some(records)
    }

    fn live_log(&self, build_id: &str) -> LogSource {
        if let Some(records) = self.app.events.live_events(build_id, self.next_seq) {
            return LogSource::Live(records);
        }
        match self.app.events.live_log(build_id) {
            Some(text) => LogSource::LiveText(text),
            None => LogSource::Nothing,
        }
    }

    /// Queues what changed since the last look: new lines and events, a
    /// new state, and the end once the build is final.
    fn observe(&mut self, build: &BuildRecord, source: LogSource) {
        let final_status = build.status.is_final();
        match source {
            LogSource::Published(text) | LogSource::LiveText(text) => {
                self.queue_text(&text, final_status);
            }
            LogSource::Live(records) => self.queue_records(records),
            LogSource::Kept(kept) => self.queue_kept(kept),
            LogSource::Nothing => {}
        }
        let current = build.phases.last();
        let state = json!({
            "status": build.status,
            "phase": current.map(|timing| timing.phase.to_string()),
            "detail": current.and_then(|timing| timing.detail.clone()),
            "phases": build.phases.len(),
        });
        if self.last_state.as_ref() != Some(&state) {
            self.pending.push_back(Sent::Status(state.clone()));
            self.last_state = Some(state);
        }
        if final_status {
            if !self.end_sent {
                self.end_sent = true;
                self.pending.push_back(Sent::Progress(ProgressRecord {
                    seq: self.next_seq,
                    elapsed_seconds: None,
                    event: ProgressEvent::End {
                        status: build.status,
                        error: build.error.clone(),
                    },
                }));
            }
            self.end(json!({ "status": build.status, "error": build.error }));
        }
    }

    /// Sends new events of the live log, and the lines they render to.
    fn queue_records(&mut self, records: Vec<ProgressRecord>) {
        for record in records {
            if record.seq < self.next_seq {
                continue;
            }
            self.next_seq = record.seq + 1;
            if let Some(line) = record.log_line() {
                for line in line.lines() {
                    self.pending.push_back(Sent::Line(line.to_owned()));
                }
                self.sent.push_str(&line);
                self.sent.push('\n');
            }
            self.end_sent |= matches!(record.event, ProgressEvent::End { .. });
            self.pending.push_back(Sent::Progress(record));
        }
    }

    /// Sends the whole lines a worker elsewhere kept since the last look.
    fn queue_kept(&mut self, kept: AttemptLogSince) {
        let (attempt, read) = self.kept.unwrap_or_default();
        let from_start = kept.attempt != attempt || read == 0;
        if from_start && kept.text.starts_with(CUT_MARK) {
            // Offsets into a log that is cut anew on each save mean
            // nothing: its lines come with the published log.
            self.kept = None;
            return;
        }
        let whole = kept.text.rfind('\n').map_or(0, |end| end + 1);
        let new = &kept.text[..whole];
        let read_now = if from_start { 0 } else { read };
        self.kept = Some((kept.attempt, read_now + new.chars().count() as i64));
        if from_start {
            self.queue_text(new, false);
        } else {
            for line in new.lines() {
                self.pending.push_back(Sent::Line(line.to_owned()));
            }
            self.sent.push_str(new);
        }
    }

    /// Sends the part of `log` not sent yet, whole lines only unless the
    /// build is over. A log that does not continue what was sent (a
    /// retried build's final log) is sent whole after a `reset` event.
    fn queue_text(&mut self, log: &str, complete: bool) {
        let new = match log.strip_prefix(self.sent.as_str()) {
            Some(new) => new,
            None => {
                self.pending.push_back(Sent::Reset);
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
            self.pending.push_back(Sent::Line(line.to_owned()));
        }
        self.sent.push_str(&new[..upto]);
    }

    fn end(&mut self, outcome: Value) {
        self.pending.push_back(Sent::End(outcome));
        self.finished = true;
    }
}
