//! What the benchmarks of this directory share: the trivial charge handler the in-process benches
//! mount, a store filled to its bound before a run, so that every first execution of the run
//! evicts a record, as it does in a service that has run for a while, the store around it that
//! forgets the completions of some keys and hands others to an empty store ([`Forgetting`]), and
//! the two operations that split what a first execution adds ([`Split`]).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use idem::fingerprint::{Fingerprint, RequestDigest};
use idem::key::IdempotencyKey;
use idem::replay::StoredResponse;
use idem::scope::Scope;
use idem::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, ImmediateStore, MemoryStore,
    Record, StoreError, StoreKey,
};
use moka::policy::EvictionPolicy;
use serde::{Deserialize, Serialize};

/// A charge with line items: the request body.
#[derive(Serialize, Deserialize)]
pub struct NewCharge {
    pub amount: u64,
    pub currency: String,
    pub customer: String,
    pub description: String,
    pub items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
}

#[derive(Serialize)]
pub struct Receipt {
    pub id: &'static str,
    pub amount: u64,
    pub items: usize,
}

/// The trivial handler: reads the charge, answers a small receipt.
pub async fn charge(Json(request): Json<NewCharge>) -> Json<Receipt> {
    Json(Receipt {
        id: "ch_1",
        amount: request.amount,
        items: request.items.len(),
    })
}

/// The body of `response`, read to its end, as a client would.
pub async fn read_body(response: Response<Body>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// A completed record like the one a JSON handler leaves: `status`, a JSON content type, `body`,
/// and the digest of an exact request.
pub fn record(status: StatusCode, body: &'static [u8]) -> Arc<Completed> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Arc::new(Completed {
        fingerprint: Fingerprint::from_bytes([0x42; 32]),
        request_digest: Some(RequestDigest::from_bytes([0x24; 32])),
        response: StoredResponse::new(status, &headers, body.into()),
    })
}

/// A key no request of a benchmark sends: `prefill-<n>`.
pub fn prefill_key(n: u64) -> StoreKey {
    let name = format!("prefill-{n}");
    StoreKey::new(
        Scope::ANONYMOUS,
        IdempotencyKey::parse(name.as_bytes(), 255).expect("valid key"),
    )
}

/// Claims and completes keys no request sends, each with a record like [`record`]'s, until the
/// store holds 99 % of its bound; returns how many.
pub fn prefill(store: &MemoryStore, status: StatusCode, body: &'static [u8]) -> u64 {
    let now = store.immediate().expect("the memory store answers at once");
    let lease = Duration::from_secs(60);
    let ttl = Duration::from_secs(24 * 3600);
    let bound = store.max_bytes() * 99 / 100;
    let mut n = 0;
    while store.weighted_size() < bound {
        for _ in 0..10_000 {
            n += 1;
            let key = prefill_key(n);
            let token = ClaimToken::random();
            let record = record(status, body);
            now.claim_now(&key, &record.fingerprint, token, lease)
                .expect("claim");
            now.complete_now(&key, token, record, ttl)
                .expect("complete");
        }
    }
    n
}

/// The prefix of the keys whose completion [`Forgetting`] forgets.
pub const FORGET: &str = "forget-";

/// The prefix of the keys [`Forgetting`] hands to an empty store of its own, forgetting their
/// completions too. Seven characters, as [`FORGET`] and the other ways' `charge-`.
pub const VACANT: &str = "vacant-";

/// The full memory store, as the benches install it, with two differences: the completion of a
/// key that starts with [`FORGET`] releases the key and keeps nothing, and a key that starts with
/// [`VACANT`] goes, for every call, to a second memory store that is kept empty the same way.
///
/// A first execution under a `forget-` key does all that any first execution does (the look, the
/// claim and the completion's check of the claim among them), but moka's insertion of its record,
/// and so none of what that insertion causes afterwards either: the eviction of an older record,
/// the deferred free of the evicted one, the rebuilds of moka's table. Beside a first execution
/// under any other key, in the same run and on the same store, it measures what moka's insertion
/// costs a first execution in place, where a control that inserts alone measures it without the
/// request around it.
///
/// A first execution under a `vacant-` key takes the same steps again, the same calls into the
/// same code, except that its looks into moka find a table that holds nothing: the new key's probe
/// of a full table (slots and records far from the caches) is what it lacks beside `forget-`.
///
/// Every other call goes to the full store unchanged; the check of the prefixes is the same few
/// instructions for every kind of key.
#[derive(Clone)]
pub struct Forgetting {
    full: MemoryStore,
    empty: MemoryStore,
}

impl Forgetting {
    /// `full` with the two kinds of keys above; the empty store has the same bound.
    pub fn new(full: MemoryStore) -> Self {
        let empty = MemoryStore::builder().max_bytes(full.max_bytes()).build();
        Self { full, empty }
    }

    /// The store that answers for `key`, and whether it forgets the key's completion.
    fn route(&self, key: &StoreKey) -> (&MemoryStore, bool) {
        // The key's bytes: `as_str` would check once more that they are text.
        let name = key.key().as_bytes();
        if name.starts_with(VACANT.as_bytes()) {
            (&self.empty, true)
        } else {
            (&self.full, name.starts_with(FORGET.as_bytes()))
        }
    }

    /// The store that answers for `key`.
    fn store(&self, key: &StoreKey) -> &MemoryStore {
        self.route(key).0
    }
}

#[async_trait]
impl IdempotencyStore for Forgetting {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.claim_now(key, fingerprint, token, lease)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        self.complete_now(key, token, completed, ttl)
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.release_now(key, token)
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.store(key).lookup(key).await
    }

    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        self.store(key).peek(key)
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

impl ImmediateStore for Forgetting {
    fn claim_now(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.store(key).claim_now(key, fingerprint, token, lease)
    }

    fn complete_now(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let (store, forgets) = self.route(key);
        if forgets {
            store.release_now(key, token)?;
            drop(completed);
            return Ok(Completion::Stored);
        }
        store.complete_now(key, token, completed, ttl)
    }

    fn release_now(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.store(key).release_now(key, token)
    }
}

/// A bare moka cache configured as the store's: what the store's records cost moka alone.
pub type BareCache =
    moka::sync::Cache<StoreKey, (Arc<Completed>, u64), foldhash::quality::RandomState>;

/// A bare cache beside `store`, full and filled with records of `receipt`: weighing each record
/// as the store does, and filled with as many.
pub fn bare_cache(store: &MemoryStore, receipt: &'static [u8]) -> BareCache {
    let bare = empty_bare_cache(store.max_bytes(), record_weight(store));
    for i in 0..store.entry_count() {
        bare.insert(prefill_key(i), (record(StatusCode::OK, receipt), 0));
    }
    bare.run_pending_tasks();
    bare
}

/// What the full `store` charges a record against its bound, on average.
fn record_weight(store: &MemoryStore) -> u32 {
    let records = store.entry_count().max(1);
    u32::try_from(store.weighted_size() / records).expect("small")
}

/// An empty bare cache of `max_bytes`, configured as the store's cache (LRU), weighing every
/// record `weight`.
fn empty_bare_cache(max_bytes: u64, weight: u32) -> BareCache {
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(move |_, _| weight)
        .eviction_policy(EvictionPolicy::lru())
        .build_with_hasher(foldhash::quality::RandomState::default())
}

/// What a first execution asks of a full store, without a request around it: the two operations
/// that split what a first execution adds to a plain request into moka's own insertion at the
/// bound, the rest of the store, and the rest of the layer.
#[derive(Clone)]
pub struct Split {
    store: MemoryStore,
    bare: BareCache,
    /// A bare cache like `bare` but of 4 GiB and empty, which no run fills: moka's insertion far
    /// from its bound.
    roomy: BareCache,
    /// The handler's answer, for the records both operations keep.
    receipt: &'static [u8],
    next_key: Arc<AtomicU64>,
}

impl Split {
    /// The split for `store`, full and filled with records of `receipt`: a bare cache beside it,
    /// weighing each record as the store does and filled with as many.
    pub fn new(store: MemoryStore, receipt: &'static [u8]) -> Self {
        Self {
            bare: bare_cache(&store, receipt),
            roomy: empty_bare_cache(4 << 30, record_weight(&store)),
            store,
            receipt,
            // Past every key the prefill used.
            next_key: Arc::new(AtomicU64::new(1 << 40)),
        }
    }

    fn fresh_key(&self) -> StoreKey {
        prefill_key(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// A claim and a completion of a fresh key on the store, with a record of its own like the
    /// handler's.
    pub fn store_once(&self) {
        let now = self.store.immediate().expect("answers at once");
        let key = self.fresh_key();
        let token = ClaimToken::random();
        let lease = Duration::from_secs(15);
        let completed = record(StatusCode::OK, self.receipt);
        let claim = now.claim_now(&key, &completed.fingerprint, token, lease);
        std::hint::black_box(claim.expect("claim"));
        let done = now.complete_now(&key, token, completed, Duration::from_secs(86_400));
        std::hint::black_box(done.expect("complete"));
    }

    /// Moka's own insertion of a record like the handler's into the bare cache, at its bound.
    pub fn moka_once(&self) {
        self.insert_into(&self.bare);
    }

    /// Moka's own insertion of a record like the handler's into a bare cache far from its bound.
    pub fn moka_roomy_once(&self) {
        self.insert_into(&self.roomy);
    }

    /// A record like the handler's inserted into `cache` under a fresh key.
    fn insert_into(&self, cache: &BareCache) {
        let completed = record(StatusCode::OK, self.receipt);
        cache.insert(self.fresh_key(), (completed, u64::MAX));
    }
}

/// The key under which [`floor`] finds its record in the bare cache.
pub const FLOOR_KEY: &str = "floor-replayed";

/// The route `path` served by [`floor`], on a [`bare_cache`] of its own beside `store` (anything
/// else inserting into it would, at its bound, push the floor's record out), which keeps the
/// record [`floor`] replays to `body`: the handler's answer `receipt` (`status`, as JSON), under
/// [`FLOOR_KEY`], with the digest of a `POST` of `body` as JSON to `path`. The cache lives as long
/// as the process.
pub fn floor_router(
    path: &str,
    store: &MemoryStore,
    body: &[u8],
    status: StatusCode,
    receipt: &'static [u8],
) -> axum::Router {
    let cache: &'static BareCache = Box::leak(Box::new(bare_cache(store, receipt)));
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let digest = RequestDigest::new(
        &http::Method::POST,
        Some(path),
        path,
        None,
        Some(b"application/json"),
        body,
    );
    let completed = Arc::new(Completed {
        fingerprint: Fingerprint::from_bytes([0x42; 32]),
        request_digest: Some(digest),
        response: StoredResponse::new(status, &headers, Bytes::from_static(receipt)),
    });
    let key = IdempotencyKey::parse(FLOOR_KEY.as_bytes(), 255).expect("valid key");
    cache.insert(StoreKey::new(Scope::ANONYMOUS, key), (completed, u64::MAX));
    axum::Router::new()
        .route(path, axum::routing::post(floor))
        .with_state(cache)
}

/// The least a replay can do, written straight against axum, moka and the record's own code,
/// without the layer around them: the key read and checked, the body read, the request's
/// SHA-256 digest, one moka `get` (which marks the record used), the digest compared, and the
/// stored answer built. What a replay through `#[idempotent]` costs beyond it is the layer's
/// plumbing; what it costs beyond a plain request is what any replay of the SPEC's costs.
///
/// The cache is borrowed for the process's life (see [`floor_router`]): a `State` of the cache
/// itself would clone moka's handle, several reference counts, on every request.
pub async fn floor(
    axum::extract::State(cache): axum::extract::State<&'static BareCache>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    let Some(key) = parts
        .headers
        .get("idempotency-key")
        .and_then(|value| IdempotencyKey::parse(value.as_bytes(), 255).ok())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let key = StoreKey::new(Scope::ANONYMOUS, key);
    let Ok(body) = axum::body::to_bytes(body, 2 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let digest = RequestDigest::new(
        &parts.method,
        parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str),
        parts.uri.path(),
        parts.uri.query(),
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
        &body,
    );
    match cache.get(&key) {
        Some((completed, _)) if completed.request_digest == Some(digest) => completed
            .response
            .replay()
            .unwrap_or_else(|_| StatusCode::GONE.into_response()),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A metrics recorder that keeps every metric in atomics of a shared registry, as Prometheus's
/// exporter does: what the `metrics` feature costs a service that collects its metrics. Installed
/// by the benches built with `--features metrics` ([`install_recorder`]).
#[cfg(feature = "metrics")]
pub struct AtomicRecorder(
    metrics_util::registry::Registry<metrics::Key, metrics_util::registry::AtomicStorage>,
);

#[cfg(feature = "metrics")]
impl metrics::Recorder for AtomicRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.0.get_or_create_counter(key, |counter| {
            metrics::Counter::from_arc(Arc::clone(counter))
        })
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.0
            .get_or_create_gauge(key, |gauge| metrics::Gauge::from_arc(Arc::clone(gauge)))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.0.get_or_create_histogram(key, |histogram| {
            metrics::Histogram::from_arc(Arc::clone(histogram))
        })
    }
}

/// Installs an [`AtomicRecorder`] as the process's recorder.
#[cfg(feature = "metrics")]
pub fn install_recorder() {
    metrics::set_global_recorder(AtomicRecorder(metrics_util::registry::Registry::atomic()))
        .expect("the only recorder");
}
