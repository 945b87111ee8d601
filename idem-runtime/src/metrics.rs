//! Metrics, behind the `metrics` feature: each request's outcome and the time of each store
//! operation, through the [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the
//! application installed (Prometheus, StatsD, …). Without the feature nothing is measured and
//! nothing of this costs anything.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `idem_requests_total` | counter | `route`, `outcome` | one per request that took part in idempotency (it had a key, or required one), by its outcome |
//! | `idem_store_seconds` | histogram | `operation` | how long a store operation took, in seconds, failures and timeouts included |
//!
//! `route` is the route's matched path (`/charges/{id}`, never the concrete path), or `unknown`
//! when the handler was not reached through a `Router`. `outcome` is the `outcome` field of the
//! `tracing` events on the target `idem`:
//!
//! | outcome | the request |
//! |---|---|
//! | `executed` | ran the handler, and its answer was stored (or, under the `keep` policy, was not kept and its key released) |
//! | `replayed` | got a stored answer |
//! | `conflict` | got `409`: a request with its key was still running |
//! | `mismatch` | got `422` (or the format's equivalent): its key was used for another request |
//! | `invalid_key` | got `400`: its key was invalid, or missing where required |
//! | `store_error` | got `503`: the store failed the claim or the wait; or ran, but its answer could not be stored before its lease ran out |
//! | `lease_lost` | ran, but its lease ran out and its key was taken over: its answer was sent, not stored |
//! | `panicked` | got `500`: the handler panicked |
//! | `response_failed` | got `500`: the handler's response body failed |
//! | `fingerprint_failed` | got `500`: an input could not be encoded for the fingerprint |
//! | `aborted` | got `500`: the exchange panicked outside the handler (in a store, say); or ran, and the store panicked while recording its outcome (its answer was sent) |
//!
//! Each request is counted once, with its final outcome. `operation` is `claim`, `renew` (a
//! claim renewed while the handler runs), `lookup` (a duplicate waiting under
//! `conflict = wait`), `complete` or `release`.
//!
//! ```
//! // With a recorder installed (`metrics_exporter_prometheus`, say), describe the metrics once.
//! idem_runtime::metrics::describe();
//! ```

#[cfg(feature = "metrics")]
use axum::extract::MatchedPath;
use http::request::Parts;

/// Registers the metrics' descriptions and units with the installed recorder (without the
/// `metrics` feature, does nothing).
pub fn describe() {
    #[cfg(feature = "metrics")]
    describe_metrics();
}

#[cfg(feature = "metrics")]
fn describe_metrics() {
    ::metrics::describe_counter!(
        "idem_requests_total",
        ::metrics::Unit::Count,
        "idempotent requests, by route and outcome"
    );
    ::metrics::describe_histogram!(
        "idem_store_seconds",
        ::metrics::Unit::Seconds,
        "the time of each idempotency store operation"
    );
}

/// The route of a request, for the `route` label (nothing at all without the feature).
#[derive(Clone, Default)]
pub(crate) struct Route {
    #[cfg(feature = "metrics")]
    path: Option<MatchedPath>,
}

impl Route {
    /// The route `parts` matched.
    pub(crate) fn of(parts: &Parts) -> Self {
        #[cfg(feature = "metrics")]
        {
            Self {
                path: parts.extensions.get::<MatchedPath>().cloned(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = parts;
            Self {}
        }
    }

    /// Counts one request of this route with `outcome`.
    #[inline]
    pub(crate) fn outcome(&self, outcome: &'static str) {
        #[cfg(feature = "metrics")]
        {
            let route = self
                .path
                .as_ref()
                .map_or("unknown", MatchedPath::as_str)
                .to_owned();
            ::metrics::counter!("idem_requests_total", "route" => route, "outcome" => outcome)
                .increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }
}

/// The clock of one store operation (nothing at all without the feature).
pub(crate) struct StoreTimer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl StoreTimer {
    /// Starts timing an operation.
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// Records the time since [`start`](Self::start) for `operation`.
    #[inline]
    pub(crate) fn stop(self, operation: &'static str) {
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("idem_store_seconds", "operation" => operation)
            .record(self.started.elapsed().as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = operation;
    }
}
