//! Scoping, attacked: another caller who guesses or knows a victim's keys and bodies, and tries
//! every variation of credential and key spelling, never receives the victim's stored response,
//! and never disturbs it.

#![allow(missing_docs)]

mod faults;
mod support;

use std::collections::HashSet;

use faults::{Served, app, bounded, client, payments_router};
use idem::config::Idempotency;
use reqwest::StatusCode;
use serde_json::{Value, json};

const VICTIM: &str = "Bearer sk_live_alice";
const CHARGES: usize = 20;

/// What the attacker sends as `Authorization`: nothing, its own credential, near misses of the
/// victim's, and the victim's next to its own (two header fields).
const CREDENTIALS: &[&[&str]] = &[
    &[],
    &["Bearer sk_live_mallory"],
    &["bearer sk_live_alice"],
    &["Bearer SK_LIVE_ALICE"],
    &["Bearer sk_live_alic"],
    &["Bearer sk_live_alice2"],
    &["Basic sk_live_alice"],
    &["sk_live_alice"],
    &["Bearer sk_live_alice", "Bearer sk_live_mallory"],
    &["Bearer sk_live_mallory", "Bearer sk_live_alice"],
];

fn body(n: usize) -> Value {
    json!({"amount": 100 + n, "currency": "eur"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_guess_of_keys_or_credentials_reads_another_callers_response() {
    bounded(async {
        let payments = app::Payments::default();
        let server = Served::start(payments_router(
            &payments,
            Idempotency::builder().build().expect("valid settings"),
        ))
        .await;
        let client = client();
        let url = server.url("/charges");

        let mut victim_answers = Vec::new();
        for n in 0..CHARGES {
            let response = client
                .post(&url)
                .header("authorization", VICTIM)
                .header("idempotency-key", format!("order-{n}"))
                .json(&body(n))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            victim_answers.push(response.text().await.unwrap());
        }
        let victim_ids: HashSet<String> = victim_answers
            .iter()
            .map(|b| serde_json::from_str::<Value>(b).unwrap()["id"].as_str().unwrap().to_owned())
            .collect();

        let mut tries = 0;
        for credentials in CREDENTIALS {
            // The victim's keys (and a few beyond), bare and quoted, with the victim's own bodies.
            for n in 0..CHARGES + 5 {
                for key in [format!("order-{n}"), format!("\"order-{n}\"")] {
                    let mut request = client.post(&url).header("idempotency-key", &key);
                    for credential in *credentials {
                        request = request.header("authorization", *credential);
                    }
                    let response = request.json(&body(n)).send().await.unwrap();
                    tries += 1;
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    let status = response.status();
                    let text = response.text().await.unwrap();
                    assert!(
                        !victim_answers.contains(&text),
                        "{credentials:?} with key {key} read the victim's response"
                    );
                    if status == StatusCode::CREATED {
                        let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        assert!(!victim_ids.contains(&id), "{credentials:?} got charge {id}");
                    }
                    // Only the attacker's own earlier request (the bare spelling of this key) may
                    // be replayed to it.
                    if key.starts_with('"') {
                        assert!(replayed, "{credentials:?} {key}: its own first request replays");
                    } else {
                        assert!(!replayed, "{credentials:?} {key}: replayed something");
                    }
                }
            }
        }

        // The victim's records are untouched: each key still replays its own answer.
        for (n, answer) in victim_answers.iter().enumerate() {
            let response = client
                .post(&url)
                .header("authorization", VICTIM)
                .header("idempotency-key", format!("order-{n}"))
                .json(&body(n))
                .send()
                .await
                .unwrap();
            assert!(response.headers().contains_key("idempotent-replayed"));
            assert_eq!(&response.text().await.unwrap(), answer);
        }
        eprintln!(
            "scope guessing: {} credential variants, {tries} guesses, none read the victim's {CHARGES} responses",
            CREDENTIALS.len()
        );
    })
    .await;
}
