//! A flood of unique keys, many times what the in-memory store may hold, over real HTTP: the
//! store's weighted size never passes its byte bound, old keys are evicted, and every request is
//! still answered.
//!
//! `IDEM_SOAK=1` sends ten times as many keys.

#![allow(missing_docs)]

mod faults;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use faults::{Served, app, bounded, charge, payments_router, size};
use futures_util::StreamExt;
use futures_util::stream;
use idem::config::Idempotency;
use idem::key::IdempotencyKey;
use idem::scope::Scope;
use idem::store::{IdempotencyStore, MemoryStore, StoreKey};

/// The store's bound: 64 KiB.
const BOUND: u64 = 64 * 1024;
const CONCURRENCY: usize = 16;

fn store_key(op: usize) -> StoreKey {
    StoreKey::new(
        Scope::ANONYMOUS,
        IdempotencyKey::parse(format!("flood-{op}").as_bytes(), 255).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_keys_stays_under_the_byte_bound_and_is_answered() {
    bounded(async {
        let store = Arc::new(MemoryStore::builder().max_bytes(BOUND).build());
        let payments = app::Payments::default();
        let idempotency = Idempotency::builder()
            .shared_store(store.clone())
            .build()
            .expect("valid settings");
        let server = Served::start(payments_router(&payments, idempotency)).await;
        // Connections are reused here: the flood is about the store, not the network.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = server.url("/charges");
        let ops = size(2000, 20_000);

        // Samples the store's weighted size all through the flood.
        let flooding = Arc::new(AtomicBool::new(true));
        let largest = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let monitor = tokio::spawn({
            let (store, flooding, largest, samples) = (
                store.clone(),
                flooding.clone(),
                largest.clone(),
                samples.clone(),
            );
            async move {
                while flooding.load(Ordering::SeqCst) {
                    largest.fetch_max(store.weighted_size(), Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });

        let statuses: Vec<u16> = stream::iter(0..ops)
            .map(|op| {
                let (client, url) = (&client, &url);
                async move {
                    client
                        .post(url)
                        .header("idempotency-key", format!("flood-{op}"))
                        .json(&charge(op, 0))
                        .send()
                        .await
                        .expect("the service answers")
                        .status()
                        .as_u16()
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        flooding.store(false, Ordering::SeqCst);
        monitor.await.expect("monitor");

        assert!(
            statuses.iter().all(|&s| s == 201),
            "every request answered 201"
        );
        assert_eq!(payments.executions(), ops as u64);
        let held = store.weighted_size();
        let entries = store.entry_count();
        let largest = largest.load(Ordering::SeqCst).max(held);
        assert!(largest <= BOUND, "{largest} bytes held, bound {BOUND}");
        assert!(
            entries > 0 && (entries as usize) < ops / 4,
            "{entries} records held"
        );

        // The oldest keys were evicted; the newest is still replayed.
        assert!(store.lookup(&store_key(0)).await.unwrap().is_none());
        let last = client
            .post(&url)
            .header("idempotency-key", format!("flood-{}", ops - 1))
            .json(&charge(ops - 1, 0))
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 201);
        assert!(last.headers().contains_key("idempotent-replayed"));
        eprintln!(
            "flood: {ops} unique keys, bound {BOUND} bytes, largest weighted size seen {largest} \
             bytes over {} samples, {held} bytes and {entries} records held at the end",
            samples.load(Ordering::SeqCst)
        );
    })
    .await;
}
