//! The phases of a running build: their times for the database, their
//! durations for the metrics, and a typed event in the log as each one
//! begins and ends.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use envstore_core::{BuildPhase, PhaseState, PhaseTiming, ProgressEvent};
use envstore_db::{Database, DbError, now_millis};
use envstore_link::ProgressSink;

use crate::log::BuildLog;

/// How long each build phase that ended took, by `phase`.
const PHASE_DURATION_METRIC: &str = "envstore_build_phase_duration_seconds";

/// The phases of a running build, with their times.
pub(crate) struct PhaseRecorder {
    log: Arc<BuildLog>,
    phases: Mutex<Vec<PhaseTiming>>,
    /// The phase under way and when it began by the monotonic clock, for the
    /// duration histogram (the recorded times are wall-clock milliseconds).
    open: Mutex<Option<(BuildPhase, Instant)>>,
}

impl PhaseRecorder {
    pub(crate) fn new(log: Arc<BuildLog>) -> Self {
        Self {
            log,
            phases: Mutex::default(),
            open: Mutex::default(),
        }
    }

    fn phases(&self) -> std::sync::MutexGuard<'_, Vec<PhaseTiming>> {
        self.phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the duration of the phase under way, if any, as it ends.
    fn close_open_phase(&self) {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((phase, started)) = open {
            metrics::histogram!(PHASE_DURATION_METRIC, "phase" => phase.as_str())
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// Ends the last phase if it is under way; returns it, for its event.
    fn finish_last(phases: &mut [PhaseTiming], detail: Option<String>) -> Option<PhaseTiming> {
        let last = phases.last_mut()?;
        if detail.is_some() {
            last.detail = detail;
        }
        if last.finished_at.is_some() {
            return None;
        }
        last.finished_at = Some(now_millis());
        Some(last.clone())
    }

    fn finished_event(timing: PhaseTiming) -> ProgressEvent {
        ProgressEvent::Phase {
            phase: timing.phase,
            state: PhaseState::Finished,
            detail: timing.detail,
        }
    }

    pub(crate) fn begin(&self, phase: BuildPhase) {
        self.close_open_phase();
        *self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((phase, Instant::now()));
        let finished = {
            let mut phases = self.phases();
            let finished = Self::finish_last(&mut phases, None);
            phases.push(PhaseTiming {
                phase,
                started_at: now_millis(),
                finished_at: None,
                detail: None,
            });
            finished
        };
        if let Some(timing) = finished {
            self.log.event(Self::finished_event(timing));
        }
        self.log.event(ProgressEvent::Phase {
            phase,
            state: PhaseState::Started,
            detail: None,
        });
    }

    /// Begins `phase` and records the phases so far in the database, and
    /// has the log kept durably, so followers elsewhere see it at once.
    pub(crate) async fn enter(
        &self,
        db: &Database,
        build_id: &str,
        phase: BuildPhase,
    ) -> Result<(), DbError> {
        self.begin(phase);
        db.record_phases(build_id, &self.snapshot()).await?;
        self.log.phase_changed();
        Ok(())
    }

    pub(crate) fn end(&self, detail: Option<String>) {
        self.close_open_phase();
        let finished = Self::finish_last(&mut self.phases(), detail);
        if let Some(timing) = finished {
            self.log.event(Self::finished_event(timing));
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PhaseTiming> {
        self.phases().clone()
    }

    /// What the build was doing, for a message: the phase under way, or the
    /// step after the last one that ended.
    pub(crate) fn doing(&self) -> String {
        match self.phases().last() {
            None => "starting".to_owned(),
            Some(last) if last.finished_at.is_none() => last.phase.as_str().to_owned(),
            Some(last) => format!("finishing {}", last.phase),
        }
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::ProgressEvent;

    use super::*;
    use crate::log::BuildLogs;

    #[test]
    fn phases_say_what_is_under_way_and_log_their_start_and_end() {
        let logs = BuildLogs::default();
        let log = logs.start("b1");
        let recorder = PhaseRecorder::new(log.clone());
        assert_eq!(recorder.doing(), "starting");
        recorder.begin(BuildPhase::Solving);
        assert_eq!(recorder.doing(), "solving");
        recorder.end(Some("4 packages".to_owned()));
        assert_eq!(recorder.doing(), "finishing solving");
        recorder.begin(BuildPhase::Downloading);
        assert_eq!(recorder.doing(), "downloading");
        recorder.begin(BuildPhase::Linking);
        let events: Vec<String> = log
            .events_from(0)
            .into_iter()
            .map(|record| record.event.to_string())
            .collect();
        assert_eq!(
            events,
            [
                "solving started",
                "solving finished: 4 packages",
                "downloading started",
                "downloading finished",
                "linking started"
            ]
        );
        assert!(
            log.events_from(0)
                .iter()
                .all(|record| matches!(record.event, ProgressEvent::Phase { .. }))
        );
        // Phases have no line of their own in the text log.
        assert_eq!(log.text(), "");
        let phases = recorder.snapshot();
        assert_eq!(phases.len(), 3);
        assert_eq!(phases[0].detail.as_deref(), Some("4 packages"));
        assert!(phases[1].finished_at.is_some());
        assert!(phases[2].finished_at.is_none());
    }
}
