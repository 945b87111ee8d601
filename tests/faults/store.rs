//! A store wrapper that injects faults into chosen operations, at random, while switched on.
//!
//! A fault happens either before the inner store is asked (nothing changed) or after it answered
//! (the change is made, but the caller never learns it — a lost acknowledgement), as a failure or
//! as a stall longer than the runtime's store timeout. The wrapper also counts, per key, the fresh
//! claims that actually reached the runtime: a handler may only ever run for one of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use idem::fingerprint::Fingerprint;
use idem::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, StoreError, StoreKey,
};

use super::Dice;

/// A store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Claim,
    Complete,
    Release,
    Lookup,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Fails without touching the inner store.
    FailBefore,
    /// Lets the inner store do the operation, then fails.
    FailAfter,
    /// Hangs before the inner store is asked.
    StallBefore,
    /// Lets the inner store do the operation, then hangs.
    StallAfter,
}

const KINDS: [Fault; 4] = [
    Fault::FailBefore,
    Fault::FailAfter,
    Fault::StallBefore,
    Fault::StallAfter,
];

/// The wrapper.
pub struct FaultyStore {
    inner: Arc<dyn IdempotencyStore>,
    dice: Arc<Dice>,
    /// Faults are injected only while this is on.
    pub active: AtomicBool,
    rates: Mutex<HashMap<Operation, f64>>,
    kinds: Mutex<Vec<Fault>>,
    /// How long a stall lasts: longer than the runtime's store timeout.
    stall: Duration,
    injected: Mutex<HashMap<(Operation, Fault), usize>>,
    fresh_claims: Mutex<HashMap<String, usize>>,
    calls: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn IdempotencyStore>, dice: Arc<Dice>, stall: Duration) -> Self {
        Self {
            inner,
            dice,
            active: AtomicBool::new(false),
            rates: Mutex::new(HashMap::new()),
            kinds: Mutex::new(KINDS.to_vec()),
            stall,
            injected: Mutex::new(HashMap::new()),
            fresh_claims: Mutex::new(HashMap::new()),
            calls: AtomicUsize::new(0),
        }
    }

    /// Faults `operation` with probability `rate` while active.
    pub fn fault(&self, operation: Operation, rate: f64) {
        self.rates.lock().unwrap().insert(operation, rate);
    }

    /// Injects only these kinds of fault (all four by default).
    pub fn only(&self, kinds: &[Fault]) {
        *self.kinds.lock().unwrap() = kinds.to_vec();
    }

    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::SeqCst);
    }

    /// Faults injected, by operation and kind.
    pub fn injected(&self) -> HashMap<(Operation, Fault), usize> {
        self.injected.lock().unwrap().clone()
    }

    pub fn injected_total(&self) -> usize {
        self.injected.lock().unwrap().values().sum()
    }

    /// Faults injected into `operation`.
    pub fn injected_into(&self, operation: Operation) -> usize {
        self.injected
            .lock()
            .unwrap()
            .iter()
            .filter(|((op, _), _)| *op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    /// How many fresh claims the runtime received for `key`.
    pub fn fresh_claims(&self, key: &str) -> usize {
        self.fresh_claims
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Store operations asked for, faulted or not.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn pick(&self, operation: Operation) -> Option<Fault> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.active.load(Ordering::SeqCst) {
            return None;
        }
        let rate = self.rates.lock().unwrap().get(&operation).copied()?;
        if !self.dice.chance(rate) {
            return None;
        }
        let fault = {
            let kinds = self.kinds.lock().unwrap();
            kinds[self.dice.below(kinds.len() as u64) as usize]
        };
        *self
            .injected
            .lock()
            .unwrap()
            .entry((operation, fault))
            .or_default() += 1;
        Some(fault)
    }

    /// Runs `op` on the inner store with the fault chosen for `operation`, if any.
    async fn with_fault<T, F>(&self, operation: Operation, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let fault = self.pick(operation);
        match fault {
            Some(Fault::FailBefore) => return Err(StoreError::new("injected failure")),
            Some(Fault::StallBefore) => {
                tokio::time::sleep(self.stall).await;
                return Err(StoreError::new("injected stall"));
            }
            _ => {}
        }
        let result = op.await;
        match fault {
            Some(Fault::FailAfter) => Err(StoreError::new("injected lost answer")),
            Some(Fault::StallAfter) => {
                tokio::time::sleep(self.stall).await;
                Err(StoreError::new("injected stall after the change"))
            }
            _ => result,
        }
    }
}

#[async_trait]
impl IdempotencyStore for FaultyStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let claim = self
            .with_fault(
                Operation::Claim,
                self.inner.claim(key, fingerprint, token, lease),
            )
            .await?;
        if claim == Claim::Fresh {
            *self
                .fresh_claims
                .lock()
                .unwrap()
                .entry(key.key().as_str().to_owned())
                .or_default() += 1;
        }
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        self.with_fault(
            Operation::Complete,
            self.inner.complete(key, token, completed, ttl),
        )
        .await
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.with_fault(Operation::Release, self.inner.release(key, token))
            .await
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.with_fault(Operation::Lookup, self.inner.lookup(key))
            .await
    }
}
