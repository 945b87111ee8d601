//! The payments API: a simulated payment processor whose writes are idempotent.
//!
//! Kept apart from `main.rs` so that tests can start the same router on a port of their own and
//! count how often a handler body ran.
//!
//! | route | idempotency | answer |
//! |---|---|---|
//! | `POST /charges` | `post` (TTL 24 h) | `201` the charge; `402` declined; `500` on a simulated failure |
//! | `GET /charges` | none | `200` every charge kept |
//! | `PATCH /charges/{id}` | `patch` | `200` the updated charge; `404` unknown charge |
//! | `POST /quotes` | `post`, TTL 2 s | `201` a quote |
//! | `POST /refunds` | `post`, key required | `201` the refund; `404` unknown charge |
//! | `GET /stats` | none | `200` how many times an idempotent handler body ran |
//!
//! With the `postgres` feature, [`Payments::in_database`] keeps the charges in a Postgres table
//! instead of this process's memory: `POST /charges`, `PATCH /charges/{id}` and `POST /refunds`
//! then work through the request's transaction (`idem::postgres::Transaction`), so that a charge
//! and its stored answer commit together, and `GET /charges` lists the table, so that every
//! instance sees every charge. The answers are the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use idem::idempotent;
use serde::{Deserialize, Deserializer, Serialize};

/// The longest processing delay a charge may ask for, in milliseconds.
pub(crate) const MAX_DELAY_MS: u64 = 10_000;

/// Charges of this amount or more are declined by the simulated card network.
pub(crate) const DECLINED_FROM: u64 = 1_000_000;

/// The processor's state: charges, id counters and the execution counter. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Payments {
    ledger: Arc<Ledger>,
    /// Where the charges are when they are not in `ledger`.
    #[cfg(feature = "postgres")]
    database: Option<database::Charges>,
}

#[derive(Default)]
struct Ledger {
    charges: Mutex<Vec<Charge>>,
    quotes: AtomicU64,
    refunds: AtomicU64,
    executions: AtomicU64,
}

impl Payments {
    /// How many times the body of an idempotent handler ran, whatever it answered.
    pub(crate) fn executions(&self) -> u64 {
        self.ledger.executions.load(Ordering::SeqCst)
    }

    fn count_execution(&self) {
        self.ledger.executions.fetch_add(1, Ordering::SeqCst);
    }

    fn charges(&self) -> MutexGuard<'_, Vec<Charge>> {
        // A panic while the lock is held cannot leave a charge half-written: every change is a
        // single push or field assignment.
        self.ledger
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A charge as the API shows it.
#[derive(Debug, Clone, Serialize)]
struct Charge {
    id: String,
    amount: u64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

/// The body of `POST /charges`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCharge {
    amount: u64,
    currency: String,
    /// How long the simulated processor takes, to try a retry while the charge is in flight.
    #[serde(default, deserialize_with = "delay_ms")]
    delay_ms: u64,
    /// Makes the simulated processor fail with a `500`.
    #[serde(default)]
    fail: bool,
}

fn delay_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let ms = u64::deserialize(deserializer)?;
    if ms > MAX_DELAY_MS {
        return Err(serde::de::Error::custom(format_args!(
            "delay_ms is {ms}; at most {MAX_DELAY_MS} is allowed"
        )));
    }
    Ok(ms)
}

/// The body of `PATCH /charges/{id}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChargeUpdate {
    description: String,
}

/// The body of `POST /quotes`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQuote {
    amount: u64,
}

#[derive(Debug, Serialize)]
struct Quote {
    id: String,
    amount: u64,
}

/// The body of `POST /refunds`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRefund {
    charge: String,
}

#[derive(Debug, Serialize)]
struct Refund {
    id: String,
    charge: String,
}

#[derive(Debug, Serialize)]
struct Stats {
    executions: u64,
}

/// An error answered by the processor itself, in the shape Stripe uses:
/// `{"error": {"type": ..., "code": ..., "message": ...}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn card_declined(amount: u64) -> Self {
        Self {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            code: "card_declined",
            message: format!(
                "the card was declined: charges of {DECLINED_FROM} or more are refused (asked {amount})"
            ),
        }
    }

    fn processor_failed() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "api_error",
            code: "processor_unavailable",
            message: "the payment processor failed while handling the charge".to_owned(),
        }
    }

    #[cfg(feature = "postgres")]
    fn database_failed(error: &idem::postgres::sqlx::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "api_error",
            code: "database_failed",
            message: format!("the ledger could not be written: {error}"),
        }
    }

    fn no_such_charge(id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "resource_missing",
            message: format!("no such charge: `{id}`"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "type": self.kind, "code": self.code, "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

/// The API's routes on `payments`. Idempotency uses the `Idempotency` installed on the returned
/// router with `Router::layer(Extension(..))`, or the process-wide default when there is none.
pub(crate) fn router(payments: Payments) -> Router {
    #[cfg(feature = "postgres")]
    if payments.database.is_some() {
        return database::router(payments);
    }
    Router::new()
        .route("/charges", post(create_charge).get(list_charges))
        .route("/charges/{id}", patch(update_charge))
        .route("/quotes", post(create_quote))
        .route("/refunds", post(create_refund))
        .route("/stats", get(stats))
        .with_state(payments)
}

#[idempotent(post)]
async fn create_charge(
    State(payments): State<Payments>,
    Json(request): Json<NewCharge>,
) -> Result<(StatusCode, Json<Charge>), ApiError> {
    payments.count_execution();
    if request.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
    }
    if request.fail {
        return Err(ApiError::processor_failed());
    }
    if request.amount >= DECLINED_FROM {
        return Err(ApiError::card_declined(request.amount));
    }
    let mut charges = payments.charges();
    let charge = Charge {
        id: format!("ch_{}", charges.len() + 1),
        amount: request.amount,
        currency: request.currency,
        description: None,
    };
    charges.push(charge.clone());
    Ok((StatusCode::CREATED, Json(charge)))
}

async fn list_charges(State(payments): State<Payments>) -> Json<Vec<Charge>> {
    Json(payments.charges().clone())
}

#[idempotent(patch)]
async fn update_charge(
    State(payments): State<Payments>,
    Path(id): Path<String>,
    Json(update): Json<ChargeUpdate>,
) -> Result<Json<Charge>, ApiError> {
    payments.count_execution();
    let mut charges = payments.charges();
    let charge = charges
        .iter_mut()
        .find(|charge| charge.id == id)
        .ok_or_else(|| ApiError::no_such_charge(&id))?;
    charge.description = Some(update.description);
    Ok(Json(charge.clone()))
}

#[idempotent(post, ttl = "2s")]
async fn create_quote(
    State(payments): State<Payments>,
    Json(request): Json<NewQuote>,
) -> (StatusCode, Json<Quote>) {
    payments.count_execution();
    let n = payments.ledger.quotes.fetch_add(1, Ordering::SeqCst) + 1;
    let quote = Quote {
        id: format!("q_{n}"),
        amount: request.amount,
    };
    (StatusCode::CREATED, Json(quote))
}

#[idempotent(post, required)]
async fn create_refund(
    State(payments): State<Payments>,
    Json(request): Json<NewRefund>,
) -> Result<(StatusCode, Json<Refund>), ApiError> {
    payments.count_execution();
    if !payments
        .charges()
        .iter()
        .any(|charge| charge.id == request.charge)
    {
        return Err(ApiError::no_such_charge(&request.charge));
    }
    let n = payments.ledger.refunds.fetch_add(1, Ordering::SeqCst) + 1;
    let refund = Refund {
        id: format!("re_{n}"),
        charge: request.charge,
    };
    Ok((StatusCode::CREATED, Json(refund)))
}

async fn stats(State(payments): State<Payments>) -> Json<Stats> {
    Json(Stats {
        executions: payments.executions(),
    })
}

/// The charges in a Postgres table, written through each request's transaction.
#[cfg(feature = "postgres")]
mod database {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, patch, post};
    use axum::{Json, Router};
    use idem::idempotent;
    use idem::postgres::{Transaction, sqlx};
    use sqlx::{PgConnection, PgPool, Row as _};

    use super::{
        ApiError, Charge, ChargeUpdate, DECLINED_FROM, NewCharge, NewRefund, Payments, Refund,
        create_quote, stats,
    };

    /// The table of charges, and the pool to read it with.
    #[derive(Clone)]
    pub(super) struct Charges {
        pool: PgPool,
        table: Arc<str>,
    }

    impl Payments {
        /// Payments whose charges live in `table` (created if it does not exist) of the
        /// database behind `pool`.
        #[allow(
            dead_code,
            reason = "the tests that include this file for the in-memory ledger do not call it"
        )]
        pub(crate) async fn in_database(pool: PgPool, table: &str) -> Result<Self, sqlx::Error> {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, \
                 amount bigint NOT NULL, currency text NOT NULL, description text)"
            ))
            .execute(&pool)
            .await?;
            Ok(Self {
                database: Some(Charges {
                    pool,
                    table: table.into(),
                }),
                ..Self::default()
            })
        }

        fn table(&self) -> &Charges {
            self.database
                .as_ref()
                .expect("routed here only with a database")
        }
    }

    pub(super) fn router(payments: Payments) -> Router {
        Router::new()
            .route("/charges", post(create_charge).get(list_charges))
            .route("/charges/{id}", patch(update_charge))
            .route("/quotes", post(create_quote))
            .route("/refunds", post(create_refund))
            .route("/stats", get(stats))
            .with_state(payments)
    }

    fn charge(row: &sqlx::postgres::PgRow) -> Result<Charge, sqlx::Error> {
        Ok(Charge {
            id: format!("ch_{}", row.try_get::<i64, _>("id")?),
            amount: row.try_get::<i64, _>("amount")?.unsigned_abs(),
            currency: row.try_get("currency")?,
            description: row.try_get("description")?,
        })
    }

    /// The row id of `ch_<n>`.
    fn row_id(id: &str) -> Option<i64> {
        id.strip_prefix("ch_")?.parse().ok()
    }

    async fn find(
        conn: &mut PgConnection,
        table: &str,
        id: &str,
    ) -> Result<Option<Charge>, sqlx::Error> {
        let Some(row_id) = row_id(id) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT id, amount, currency, description FROM {table} WHERE id = $1"
        ))
        .bind(row_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(charge).transpose()
    }

    /// Inserts the charge through the request's transaction first, then waits `delay_ms`: a
    /// crash during the wait leaves an uncommitted row, which Postgres throws away.
    #[idempotent(post)]
    async fn create_charge(
        State(payments): State<Payments>,
        tx: Transaction,
        Json(request): Json<NewCharge>,
    ) -> Result<(StatusCode, Json<Charge>), ApiError> {
        payments.count_execution();
        let refused = if request.fail {
            Some(ApiError::processor_failed())
        } else if request.amount >= DECLINED_FROM {
            Some(ApiError::card_declined(request.amount))
        } else {
            None
        };
        let charge = match refused {
            Some(_) => None,
            None => {
                let table = &payments.table().table;
                let mut conn = tx.lock().await;
                let row = sqlx::query(&format!(
                    "INSERT INTO {table} (amount, currency) VALUES ($1, $2) \
                     RETURNING id, amount, currency, description"
                ))
                .bind(i64::try_from(request.amount).unwrap_or(i64::MAX))
                .bind(&request.currency)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| ApiError::database_failed(&e))?;
                Some(charge(&row).map_err(|e| ApiError::database_failed(&e))?)
            }
        };
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
        }
        match (refused, charge) {
            (Some(error), _) => Err(error),
            (None, Some(charge)) => Ok((StatusCode::CREATED, Json(charge))),
            (None, None) => unreachable!("a charge is inserted unless refused"),
        }
    }

    async fn list_charges(State(payments): State<Payments>) -> Result<Json<Vec<Charge>>, ApiError> {
        let Charges { pool, table } = payments.table();
        let rows = sqlx::query(&format!(
            "SELECT id, amount, currency, description FROM {table} ORDER BY id"
        ))
        .fetch_all(pool)
        .await
        .map_err(|e| ApiError::database_failed(&e))?;
        let charges = rows
            .iter()
            .map(charge)
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::database_failed(&e))?;
        Ok(Json(charges))
    }

    #[idempotent(patch)]
    async fn update_charge(
        State(payments): State<Payments>,
        tx: Transaction,
        Path(id): Path<String>,
        Json(update): Json<ChargeUpdate>,
    ) -> Result<Json<Charge>, ApiError> {
        payments.count_execution();
        let table = &payments.table().table;
        let mut conn = tx.lock().await;
        if find(&mut conn, table, &id)
            .await
            .map_err(|e| ApiError::database_failed(&e))?
            .is_none()
        {
            return Err(ApiError::no_such_charge(&id));
        }
        let row = sqlx::query(&format!(
            "UPDATE {table} SET description = $1 WHERE id = $2 \
             RETURNING id, amount, currency, description"
        ))
        .bind(update.description)
        .bind(row_id(&id))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| ApiError::database_failed(&e))?;
        Ok(Json(
            charge(&row).map_err(|e| ApiError::database_failed(&e))?,
        ))
    }

    #[idempotent(post, required)]
    async fn create_refund(
        State(payments): State<Payments>,
        tx: Transaction,
        Json(request): Json<NewRefund>,
    ) -> Result<(StatusCode, Json<Refund>), ApiError> {
        payments.count_execution();
        let table = &payments.table().table;
        let found = find(&mut *tx.lock().await, table, &request.charge)
            .await
            .map_err(|e| ApiError::database_failed(&e))?;
        if found.is_none() {
            return Err(ApiError::no_such_charge(&request.charge));
        }
        let n = payments.ledger.refunds.fetch_add(1, Ordering::SeqCst) + 1;
        let refund = Refund {
            id: format!("re_{n}"),
            charge: request.charge,
        };
        Ok((StatusCode::CREATED, Json(refund)))
    }
}
