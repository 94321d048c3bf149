//! A build's log as Server-Sent Events, for `envstore submit --wait`, the
//! web UI and `curl -N`: lines as the worker writes them, the build's state
//! whenever it moves to another phase, and an `end` event when it is over.
//!
//! Lines come from the live log of a build running in this process. A build
//! running on another node still reports its state and phases as they
//! change (they are in the database), and its lines arrive when it ends,
//! from the published log.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use envstore_db::BuildRecord;
use envstore_store::{StoreError, keys};
use futures::Stream;
use serde_json::json;

use crate::AppState;

/// How often a followed build is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the client has been sent so far.
struct Follow {
    app: AppState,
    build_id: String,
    /// The part of the log already sent as `line` events.
    sent: String,
    /// The last `status` event's content, to send only changes.
    last_state: Option<serde_json::Value>,
    /// Events ready to go out before looking again.
    pending: std::collections::VecDeque<Event>,
    looked: bool,
    finished: bool,
}

/// The event stream of the build `build_id`, which the caller may view.
pub fn follow_build(app: AppState, build_id: String) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let follow = Follow {
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
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            follow.looked = true;
            follow.poll().await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl Follow {
    async fn poll(&mut self) {
        let build = match self.app.db.build(&self.build_id).await {
            Ok(Some(build)) => build,
            Ok(None) => return self.end(json!({ "status": "unknown", "error": "the build was removed" })),
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
            self.pending.push_back(Event::default().event("status").data(state.to_string()));
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
                self.pending.push_back(Event::default().event("reset").data("the complete log follows"));
                self.sent.clear();
                log
            }
        };
        let upto = if complete { new.len() } else { new.rfind('\n').map_or(0, |end| end + 1) };
        for line in new[..upto].lines() {
            // A bare carriage return would end the event early in a client.
            self.pending.push_back(Event::default().event("line").data(line.replace('\r', " ")));
        }
        self.sent.push_str(&new[..upto]);
    }

    fn end(&mut self, outcome: serde_json::Value) {
        self.pending.push_back(Event::default().event("end").data(outcome.to_string()));
        self.finished = true;
    }
}
