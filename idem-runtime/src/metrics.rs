//! Metrics, behind the `metrics` feature: each request's outcome and the time of each store
//! operation, through the [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the
//! application installed (Prometheus, StatsD, …). Without the feature nothing is measured and
//! nothing of this costs anything. With it, a request allocates nothing for its metrics: each
//! metric's key (its name and labels) is made once per thread and kept, and the recorder is asked
//! for the metric by it at every count and timing, so that whichever recorder is in effect then
//! gets it.
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
            let route = self.path.as_ref().map_or("unknown", MatchedPath::as_str);
            keys::with_request_key(route, outcome, |key| {
                ::metrics::with_recorder(|recorder| {
                    recorder.register_counter(key, &keys::METADATA).increment(1);
                });
            });
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
        {
            let seconds = self.started.elapsed().as_secs_f64();
            keys::with_store_key(operation, |key| {
                ::metrics::with_recorder(|recorder| {
                    recorder
                        .register_histogram(key, &keys::METADATA)
                        .record(seconds);
                });
            });
        }
        #[cfg(not(feature = "metrics"))]
        let _ = operation;
    }
}

/// The metrics' keys, made once per thread and reused.
///
/// A key names a metric and carries its labels, and the recorder finds the metric by it, by the
/// hash the key computes when it is made. Made for every request (as `metrics`' macros make them),
/// a key costs an allocation for the route's label, another for the list of labels, and the hash
/// of all of it; kept, it costs a look in a small table of this thread's. The keys are the
/// recorder's to read, not its metrics: whichever recorder is in effect, local or global, installed
/// before or after the first request, is asked for the metric as before.
///
/// A thread keeps a key for every route and outcome it has counted, and for every store
/// operation: as many as the router has routes (a route is its matched path, never the concrete
/// path), times the outcomes.
#[cfg(feature = "metrics")]
mod keys {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use metrics::{Key, Label, Level, Metadata};

    /// The metadata every metric of the crate is registered with.
    pub(super) static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// One thread's keys.
    #[derive(Default)]
    struct Keys {
        /// `idem_requests_total`: per route, its outcomes' keys.
        requests: HashMap<Box<str>, Labelled, foldhash::fast::RandomState>,
        /// `idem_store_seconds`: per operation.
        store: Labelled,
    }

    /// Keys that differ by one label's value, the value a `&'static str` of the crate: a short
    /// list, found by comparing the values.
    #[derive(Default)]
    struct Labelled(Vec<(&'static str, Key)>);

    impl Labelled {
        fn get_or_make(&mut self, value: &'static str, make: impl FnOnce() -> Key) -> &Key {
            let at = match self.0.iter().position(|(known, _)| *known == value) {
                Some(at) => at,
                None => {
                    self.0.push((value, make()));
                    self.0.len() - 1
                }
            };
            &self.0[at].1
        }
    }

    thread_local! {
        static KEYS: RefCell<Keys> = RefCell::new(Keys::default());
    }

    fn request_key(route: &str, outcome: &'static str) -> Key {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::from_static_parts("outcome", outcome),
        ];
        Key::from_parts("idem_requests_total", labels)
    }

    fn store_key(operation: &'static str) -> Key {
        let labels = vec![Label::from_static_parts("operation", operation)];
        Key::from_parts("idem_store_seconds", labels)
    }

    /// Calls `record` with the key of `idem_requests_total{route, outcome}`.
    pub(super) fn with_request_key(route: &str, outcome: &'static str, record: impl FnOnce(&Key)) {
        with_keys(
            |keys| {
                if !keys.requests.contains_key(route) {
                    keys.requests.insert(route.into(), Labelled::default());
                }
                keys.requests
                    .get_mut(route)
                    .map(|outcomes| outcomes.get_or_make(outcome, || request_key(route, outcome)))
            },
            || request_key(route, outcome),
            record,
        );
    }

    /// Calls `record` with the key of `idem_store_seconds{operation}`.
    pub(super) fn with_store_key(operation: &'static str, record: impl FnOnce(&Key)) {
        with_keys(
            |keys| Some(keys.store.get_or_make(operation, || store_key(operation))),
            || store_key(operation),
            record,
        );
    }

    /// Calls `record` with the key `find` finds in this thread's keys, or, where they cannot be
    /// borrowed (a recorder that records a metric of this crate while it registers one, or a
    /// thread whose locals are being destroyed), with a key made for this call alone.
    fn with_keys(
        find: impl FnOnce(&mut Keys) -> Option<&Key>,
        make: impl FnOnce() -> Key,
        record: impl FnOnce(&Key),
    ) {
        let mut record = Some(record);
        let _ = KEYS.try_with(|keys| {
            if let Ok(mut keys) = keys.try_borrow_mut()
                && let Some(key) = find(&mut keys)
                && let Some(record) = record.take()
            {
                record(key);
            }
        });
        if let Some(record) = record {
            record(&make());
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::sync::Mutex;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::{Route, StoreTimer};

    /// Remembers every key it is asked for; while it registers the first counter, it counts an
    /// outcome of its own, as a recorder that reports on itself through this crate would.
    #[derive(Default)]
    struct Reentrant {
        registered: Mutex<Vec<String>>,
    }

    impl Reentrant {
        fn registered(&self) -> Vec<String> {
            self.registered.lock().unwrap().clone()
        }
    }

    fn describe(key: &Key) -> String {
        let labels: Vec<_> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Reentrant {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let first = {
                let mut registered = self.registered.lock().unwrap();
                registered.push(describe(key));
                registered.len() == 1
            };
            if first {
                Route::default().outcome("aborted");
            }
            Counter::noop()
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.registered.lock().unwrap().push(describe(key));
            Histogram::noop()
        }
    }

    #[test]
    fn a_recorder_that_counts_while_it_registers_gets_both_keys() {
        let recorder = Reentrant::default();
        metrics::with_local_recorder(&recorder, || {
            Route::default().outcome("replayed");
            Route::default().outcome("replayed");
        });
        assert_eq!(
            recorder.registered(),
            [
                "idem_requests_total{route=unknown,outcome=replayed}",
                "idem_requests_total{route=unknown,outcome=aborted}",
                "idem_requests_total{route=unknown,outcome=replayed}",
            ]
        );
    }

    #[test]
    fn kept_keys_name_each_outcome_and_operation_with_its_own_labels() {
        let recorder = Reentrant::default();
        metrics::with_local_recorder(&recorder, || {
            // The re-entrant count of the first registration, out of the way.
            Route::default().outcome("executed");
            for _ in 0..2 {
                Route::default().outcome("executed");
                Route::default().outcome("conflict");
                StoreTimer::start().stop("claim");
                StoreTimer::start().stop("complete");
            }
        });
        let registered = recorder.registered();
        assert_eq!(
            registered[2..],
            [
                "idem_requests_total{route=unknown,outcome=executed}",
                "idem_requests_total{route=unknown,outcome=conflict}",
                "idem_store_seconds{operation=claim}",
                "idem_store_seconds{operation=complete}",
            ]
            .repeat(2)
        );
    }
}
