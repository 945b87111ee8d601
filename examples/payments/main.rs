//! A small payments API whose writes are safe to retry: `cargo run --example payments`.
//!
//! Listens on `$PAYMENTS_ADDR` (default `127.0.0.1:3000`). Keys live in the process's memory, or,
//! when built with `--features redis` and `$REDIS_URL` is set, in Redis, so that several instances
//! share them. Built with `--features postgres` and `$DATABASE_URL` set, the charges and the keys
//! both live in that Postgres database (tables `payments_charges` and `payments_idem_keys`,
//! created if missing), and each charge commits together with its stored answer.
//! `$PAYMENTS_LEASE_MS` sets the claims' lease (default: idem's, 15 s). The routes are
//! described in `app.rs`; the README shows a session with curl.

// The address line is this program's interface: scripts wait for it.
#![allow(clippy::print_stdout)]

mod app;

use std::error::Error;

use axum::Extension;
use idem::config::Idempotency;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::var("PAYMENTS_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let (idempotency, payments, store) = setup().await?;
    let router = app::router(payments).layer(Extension(idempotency));

    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    println!(
        "payments example listening on http://{} (keys in {store})",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            // Without a signal handler the server simply runs until it is killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await?;
    Ok(())
}

/// The idempotency configuration, the payments and a description of where keys are kept: Postgres
/// when the `postgres` feature is on and `$DATABASE_URL` is set (the charges too), else Redis when
/// the `redis` feature is on and `$REDIS_URL` is set, else this process's memory.
async fn setup() -> Result<(Idempotency, app::Payments, String), Box<dyn Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = idem::postgres::PostgresStore::builder()
            .url(url.as_str())
            .table("payments_idem_keys")
            .migrate(true)
            .build()
            .await
            .map_err(|error| format!("cannot use Postgres at {url}: {error}"))?;
        let payments = app::Payments::in_database(store.pool().clone(), "payments_charges").await?;
        let idempotency = Idempotency::builder().store(store).build()?;
        return Ok((idempotency, payments, "Postgres".to_owned()));
    }
    let (idempotency, store) = idempotency().await?;
    Ok((idempotency, app::Payments::default(), store))
}

/// The idempotency configuration and a description of where keys are kept: Redis when the
/// `redis` feature is on and `$REDIS_URL` is set, this process's memory otherwise.
async fn idempotency() -> Result<(Idempotency, String), Box<dyn Error>> {
    let mut builder = Idempotency::builder();
    if let Ok(lease) = std::env::var("PAYMENTS_LEASE_MS") {
        let ms: u64 = lease
            .parse()
            .map_err(|_| format!("PAYMENTS_LEASE_MS is {lease:?}, not a number of milliseconds"))?;
        builder = builder.lease(std::time::Duration::from_millis(ms));
    }
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let store = idem::store::RedisStore::builder()
            .url(url.as_str())
            .prefix("payments:idem:")
            .build()
            .await
            .map_err(|error| format!("cannot use Redis at {url}: {error}"))?;
        let idempotency = builder.store(store).build()?;
        return Ok((idempotency, format!("Redis at {url}")));
    }
    Ok((builder.build()?, "memory".to_owned()))
}
