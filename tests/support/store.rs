//! The store wrapper every test with a misbehaving store uses: it passes each operation to an
//! inner store, and injects faults, holds and observations into chosen ones.
//!
//! A fault happens either before the inner store is asked (nothing changed) or after it answered
//! (the change is made, but the caller never learns it — a lost acknowledgement), as a failure or
//! as a stall longer than the runtime's store timeout. Faults are injected
//!
//! - at random, into a share of the calls of an operation, while the wrapper is switched on
//!   ([`FaultyStore::fault`], [`FaultyStore::set_active`]), or
//! - into every call of an operation, until cleared ([`FaultyStore::force`]).
//!
//! An operation can also be held at a gate until released ([`FaultyStore::hold`]), and a test can
//! wait until an operation has been asked for ([`FaultyStore::called`]). The wrapper counts, per
//! key, the fresh claims that actually reached the runtime: a handler may only ever run for one of
//! those.
//!
//! It never answers [`IdempotencyStore::peek`], so that every request goes through
//! [`IdempotencyStore::claim`], where the faults are, unless built with
//! [`FaultyStore::forwarding_peek`] for a test of the byte-identical replay. Built with
//! [`FaultyStore::answering_at_once`] around a store that answers at once, it answers at once too
//! ([`IdempotencyStore::immediate`]), with the same faults made synchronous: the runtime's way
//! for such stores is then under test. A stall cannot happen there; it fails instead.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use idem::fingerprint::Fingerprint;
use idem::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, ImmediateStore, MemoryStore,
    Record, StoreError, StoreKey,
};
use tokio::sync::watch;

use super::Dice;

/// A store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Claim,
    Complete,
    Release,
    Lookup,
}

impl Operation {
    const ALL: [Self; 4] = [Self::Claim, Self::Complete, Self::Release, Self::Lookup];

    fn index(self) -> usize {
        self as usize
    }
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
    /// Panics before the inner store is asked (only when forced).
    Panic,
    /// Waits [`PANIC_LATER`], then panics before the inner store is asked, so that the panic
    /// comes once the exchange has moved into a task of its own (only when forced). Answering at
    /// once, nothing waits: it panics at once, as [`Fault::Panic`] does.
    PanicLater,
    /// Lets the inner store do the operation; a claim it answers [`Claim::Fresh`] is answered as
    /// the key's in-flight record of another claim, with the same fingerprint — a renewal finds
    /// its key taken over (only when forced; other operations are left as they are).
    TakenOver,
}

const KINDS: [Fault; 4] = [
    Fault::FailBefore,
    Fault::FailAfter,
    Fault::StallBefore,
    Fault::StallAfter,
];

/// How long [`Fault::PanicLater`] waits before it panics.
const PANIC_LATER: Duration = Duration::from_millis(5);

/// How long a stall lasts unless [`FaultyStore::stalling_for`] says otherwise: far longer than
/// any store timeout a test sets.
const STALL: Duration = Duration::from_secs(3600);

/// The wrapper.
pub struct FaultyStore {
    inner: Arc<dyn IdempotencyStore>,
    /// Random faults are injected only while this is on.
    active: AtomicBool,
    dice: Option<Arc<Dice>>,
    rates: Mutex<HashMap<Operation, f64>>,
    kinds: Mutex<Vec<Fault>>,
    forced: Mutex<HashMap<Operation, Fault>>,
    /// Per operation: whether its calls wait at the gate.
    held: [watch::Sender<bool>; 4],
    /// How long a stall lasts.
    stall: Duration,
    injected: Mutex<HashMap<(Operation, Fault), usize>>,
    fresh_claims: Mutex<HashMap<String, HashSet<ClaimToken>>>,
    /// Calls asked for, per operation.
    calls: watch::Sender<[usize; 4]>,
    /// Whether it answers at once, as its inner store does.
    at_once: bool,
    /// Whether it answers `peek` as its inner store does.
    peeks: bool,
}

impl FaultyStore {
    /// A wrapper around `inner` that changes nothing until told to.
    pub fn new(inner: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            inner,
            active: AtomicBool::new(false),
            dice: None,
            rates: Mutex::new(HashMap::new()),
            kinds: Mutex::new(KINDS.to_vec()),
            forced: Mutex::new(HashMap::new()),
            held: Operation::ALL.map(|_| watch::channel(false).0),
            stall: STALL,
            injected: Mutex::new(HashMap::new()),
            fresh_claims: Mutex::new(HashMap::new()),
            calls: watch::channel([0; 4]).0,
            at_once: false,
            peeks: false,
        }
    }

    /// Answers at once, in place of the asynchronous calls, as the inner store does.
    ///
    /// # Panics
    ///
    /// If the inner store does not answer at once.
    #[must_use]
    pub fn answering_at_once(mut self) -> Self {
        assert!(self.inner.immediate().is_some(), "the inner store waits");
        self.at_once = true;
        self
    }

    /// Answers [`IdempotencyStore::peek`] as the inner store does, so that a byte-identical retry
    /// of a completed request is replayed before its body is parsed, with no claim (and no fault).
    #[must_use]
    pub fn forwarding_peek(mut self) -> Self {
        self.peeks = true;
        self
    }

    /// A wrapper around a fresh [`MemoryStore`].
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryStore::default()))
    }

    /// Random faults are drawn from `dice` (see [`FaultyStore::fault`]).
    #[must_use]
    pub fn with_dice(mut self, dice: Arc<Dice>) -> Self {
        self.dice = Some(dice);
        self
    }

    /// A stall lasts `stall` (an hour by default), then fails.
    #[must_use]
    pub fn stalling_for(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Faults `operation` with probability `rate` while active, with a kind drawn at random from
    /// those allowed (see [`FaultyStore::only`]).
    ///
    /// # Panics
    ///
    /// Without [`FaultyStore::with_dice`].
    pub fn fault(&self, operation: Operation, rate: f64) {
        assert!(self.dice.is_some(), "random faults need dice");
        self.rates.lock().unwrap().insert(operation, rate);
    }

    /// Injects only these kinds of random fault (all four by default).
    pub fn only(&self, kinds: &[Fault]) {
        *self.kinds.lock().unwrap() = kinds.to_vec();
    }

    /// Switches random faults on or off.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::SeqCst);
    }

    /// Every call of `operation` gets `fault` from now on, whether active or not; `None` clears it.
    pub fn force(&self, operation: Operation, fault: Option<Fault>) {
        let mut forced = self.forced.lock().unwrap();
        match fault {
            Some(fault) => forced.insert(operation, fault),
            None => forced.remove(&operation),
        };
    }

    /// Calls of `operation` wait, before the inner store is asked, until [`FaultyStore::release`].
    pub fn hold(&self, operation: Operation) {
        self.held[operation.index()].send_replace(true);
    }

    /// Lets held and later calls of `operation` go on.
    pub fn release(&self, operation: Operation) {
        self.held[operation.index()].send_replace(false);
    }

    /// Waits until `operation` has been asked for `n` times in all.
    pub async fn called(&self, operation: Operation, n: usize) {
        let mut calls = self.calls.subscribe();
        calls
            .wait_for(|calls| calls[operation.index()] >= n)
            .await
            .expect("kept by the store");
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
            .map_or(0, HashSet::len)
    }

    /// Store operations asked for, faulted or not.
    pub fn calls(&self) -> usize {
        self.calls.borrow().iter().sum()
    }

    /// Counts a call of `operation` and chooses its fault, if any: the forced one, else, while
    /// active, one at random.
    fn pick(&self, operation: Operation) -> Option<Fault> {
        self.calls
            .send_modify(|calls| calls[operation.index()] += 1);
        let fault = self
            .forced
            .lock()
            .unwrap()
            .get(&operation)
            .copied()
            .or_else(|| self.random(operation))?;
        *self
            .injected
            .lock()
            .unwrap()
            .entry((operation, fault))
            .or_default() += 1;
        Some(fault)
    }

    fn random(&self, operation: Operation) -> Option<Fault> {
        if !self.active.load(Ordering::SeqCst) {
            return None;
        }
        let rate = self.rates.lock().unwrap().get(&operation).copied()?;
        let dice = self.dice.as_ref()?;
        if !dice.chance(rate) {
            return None;
        }
        let kinds = self.kinds.lock().unwrap();
        Some(kinds[dice.below(kinds.len() as u64) as usize])
    }

    /// Runs `op` on the inner store, after the gate of `operation` and with `fault`, if any (as
    /// [`FaultyStore::pick`] chose it for this call).
    async fn with_fault<T, F>(
        &self,
        operation: Operation,
        fault: Option<Fault>,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut held = self.held[operation.index()].subscribe();
        held.wait_for(|held| !*held)
            .await
            .expect("kept by the store");
        match fault {
            Some(Fault::FailBefore) => return Err(StoreError::new("injected failure")),
            Some(Fault::Panic) => panic!("injected panic in {operation:?}"),
            Some(Fault::PanicLater) => {
                tokio::time::sleep(PANIC_LATER).await;
                panic!("injected panic in {operation:?}, later");
            }
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

impl FaultyStore {
    /// Runs `op` on the inner store at once, with `fault`, if any (as [`FaultyStore::pick`] chose
    /// it for this call of `operation`); a stall fails and a later panic comes at once, since
    /// nothing here waits.
    fn with_fault_now<T>(
        &self,
        operation: Operation,
        fault: Option<Fault>,
        op: impl FnOnce(&dyn ImmediateStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match fault {
            Some(Fault::FailBefore | Fault::StallBefore) => {
                return Err(StoreError::new("injected failure"));
            }
            Some(Fault::Panic | Fault::PanicLater) => panic!("injected panic in {operation:?}"),
            _ => {}
        }
        let inner = self.inner.immediate().expect("checked when built");
        let result = op(inner);
        match fault {
            Some(Fault::FailAfter | Fault::StallAfter) => {
                Err(StoreError::new("injected lost answer"))
            }
            _ => result,
        }
    }

    /// The claim the runtime gets for the inner store's `claim`, under `fault`: a fresh one is
    /// taken over by [`Fault::TakenOver`].
    fn answer_claim(fault: Option<Fault>, claim: Claim, fingerprint: &Fingerprint) -> Claim {
        match (fault, claim) {
            (Some(Fault::TakenOver), Claim::Fresh) => Claim::Existing(Record::InFlight {
                fingerprint: *fingerprint,
            }),
            (_, claim) => claim,
        }
    }

    fn count_fresh(&self, key: &StoreKey, token: ClaimToken, claim: &Claim) {
        if *claim == Claim::Fresh {
            // A renewal is a claim repeated under the same token: a key's fresh claims are its
            // distinct tokens.
            self.fresh_claims
                .lock()
                .unwrap()
                .entry(key.key().as_str().to_owned())
                .or_default()
                .insert(token);
        }
    }
}

impl ImmediateStore for FaultyStore {
    fn claim_now(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let fault = self.pick(Operation::Claim);
        let claim = self.with_fault_now(Operation::Claim, fault, |inner| {
            inner.claim_now(key, fingerprint, token, lease)
        })?;
        let claim = Self::answer_claim(fault, claim, fingerprint);
        self.count_fresh(key, token, &claim);
        Ok(claim)
    }

    fn complete_now(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let fault = self.pick(Operation::Complete);
        self.with_fault_now(Operation::Complete, fault, |inner| {
            inner.complete_now(key, token, completed, ttl)
        })
    }

    fn release_now(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        let fault = self.pick(Operation::Release);
        self.with_fault_now(Operation::Release, fault, |inner| {
            inner.release_now(key, token)
        })
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
        let fault = self.pick(Operation::Claim);
        let claim = self
            .with_fault(
                Operation::Claim,
                fault,
                self.inner.claim(key, fingerprint, token, lease),
            )
            .await?;
        let claim = Self::answer_claim(fault, claim, fingerprint);
        self.count_fresh(key, token, &claim);
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let fault = self.pick(Operation::Complete);
        self.with_fault(
            Operation::Complete,
            fault,
            self.inner.complete(key, token, completed, ttl),
        )
        .await
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        let fault = self.pick(Operation::Release);
        self.with_fault(Operation::Release, fault, self.inner.release(key, token))
            .await
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let fault = self.pick(Operation::Lookup);
        self.with_fault(Operation::Lookup, fault, self.inner.lookup(key))
            .await
    }

    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        if self.peeks {
            self.inner.peek(key)
        } else {
            None
        }
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        if self.at_once { Some(self) } else { None }
    }
}
