//! The run routes from the client's side (`chaosctl run`, `runs`, `report`, the tests).

use std::time::Duration;

use hyper::Method;

use crate::{
    client::{Client, ClientError},
    scenario::{
        report::Report,
        wire::{EventsPage, RunInfo, RunRequest},
    },
};

impl Client {
    /// Starts a run of a scenario file's text; the daemon validates it first.
    pub async fn start_run(&self, req: &RunRequest) -> Result<RunInfo, ClientError> {
        self.call(Method::POST, "/v1/runs", Some(req)).await
    }

    pub async fn runs(&self) -> Result<Vec<RunInfo>, ClientError> {
        self.call(Method::GET, "/v1/runs", None::<&()>).await
    }

    pub async fn run(&self, id: &str) -> Result<RunInfo, ClientError> {
        self.call(Method::GET, &format!("/v1/runs/{id}"), None::<&()>)
            .await
    }

    /// Events after `after`, waiting up to `wait` for the next one.
    pub async fn run_events(
        &self,
        id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventsPage, ClientError> {
        let path = format!(
            "/v1/runs/{id}/events?after={after}&wait_ms={}",
            wait.as_millis()
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn run_report(&self, id: &str) -> Result<Report, ClientError> {
        self.call(Method::GET, &format!("/v1/runs/{id}/report"), None::<&()>)
            .await
    }

    /// Asks the run to abort; it rolls back on its own.
    pub async fn abort_run(&self, id: &str) -> Result<RunInfo, ClientError> {
        self.call(Method::DELETE, &format!("/v1/runs/{id}"), None::<&()>)
            .await
    }

    /// Follows a run's events until it ends, calling `each` for every event; returns the
    /// cursor reached.
    pub async fn follow_run(
        &self,
        id: &str,
        mut after: u64,
        mut each: impl FnMut(&crate::scenario::wire::RunEvent),
    ) -> Result<u64, ClientError> {
        loop {
            let page = self.run_events(id, after, Duration::from_secs(2)).await?;
            page.events.iter().for_each(&mut each);
            after = page.next;
            if page.finished {
                return Ok(after);
            }
        }
    }
}
