//! The gate object's alarm, shared by its keys: each key's slot records when it
//! is next due ([`arm`]), and the object's one alarm is set to the earliest.
//! Here too: keeping a live holder's lease, and handing an answer's record to
//! its mirror (`idempotency::shard` decides what an alarm run does).

use super::Slots;
use super::{now_ms, shard_over, AlarmAt, KeyGate};
use crate::envelope::Envelope;
use crate::idempotency::gate::Committed;
use crate::idempotency::shard::SlotTable;
use crate::idempotency::waiting;
use crate::idempotency::StoredResponse;
use crate::mirror_do::MirroredRecords;
use crate::store::D1Records;
use futures_util::FutureExt;
use std::time::Duration;
use worker::{console_error, js_sys, wasm_bindgen, Delay, ScheduledTime, Storage};

pub(super) fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
        ms as f64,
    )))
}

impl KeyGate {
    /// The key `name`'s slot is next due for the alarm at `when` (see [`arm`]).
    pub(super) fn arm(
        &self,
        name: &str,
        when: i64,
    ) -> impl std::future::Future<Output = ()> + 'static {
        arm(
            &self.slots,
            &self.alarm_at,
            self.state.storage(),
            name,
            when,
        )
    }

    /// Keeps a live holder's lease: arms the alarm (so a holder that dies is
    /// recovered without a request) and renews the lease every third of its
    /// length for as long as the handler runs — the lease only bounds how long a
    /// *dead* holder blocks the key. A storage write made before the answer holds
    /// the answer back (output gate), so nothing is written for handlers done
    /// within LEASE_ALARM_AFTER; one that dies sooner is recovered by the next
    /// request taking over its expired lease. Ends only if the lease is lost.
    pub(super) async fn keep_lease(&self, name: &str, token: &str, first_expiry: i64) {
        Delay::from(LEASE_ALARM_AFTER).await;
        self.arm(name, first_expiry).await;
        let every = Duration::from_millis(waiting::renew_every_ms(self.config.lease_ms) as u64);
        loop {
            Delay::from(every).await;
            match self.gate(name).renew(token) {
                Ok(Some(until)) => self.arm(name, until).await,
                Ok(None) => return,
                Err(e) => console_error!("KeyGate: renewing the lease failed: {e}"),
            }
        }
    }

    /// Arms the key's alarm at `when`, after the answer has gone out (background).
    pub(super) fn arm_later(&self, name: &str, when: i64) {
        let armed = self.arm(name, when);
        self.state.wait_until(armed);
    }

    /// Hands the D1 record of an answer just made final in the slot to the key's
    /// record mirror (write-behind, after the answer), which batches it into D1.
    /// Called in the same turn as `finish`: the retry alarm is set before anything
    /// is awaited, so it commits with the answer (one write, one sync) and a crash
    /// before the mirror has the record still leaves an alarm that sends it again.
    /// Once the mirror has it (durably), the alarm moves to the answer's expiry.
    pub(super) fn sync_record_later(
        &self,
        env: &Envelope,
        name: &str,
        response: &StoredResponse,
        created_at: i64,
        expires_at: i64,
    ) {
        let storage = self.state.storage();
        // Made now, committed with the answer; awaited below.
        let retry = self.arm(name, now_ms() + SYNC_RETRY_MS);
        let (slots, alarm_at, d1_env, lease_ms) = (
            self.slots.clone(),
            self.alarm_at.clone(),
            self.env.clone(),
            self.config.lease_ms,
        );
        let (key, name) = (env.record_key(), name.to_string());
        let record = Committed {
            fingerprint: env.fingerprint_str().to_string(),
            response: response.clone(),
            created_at,
            expires_at,
        };
        self.state.wait_until(async move {
            retry.await;
            let gate = shard_over(&slots, lease_ms, usize::MAX).gate(&name);
            let written = match d1_env.d1(crate::config::DB_BINDING) {
                Ok(db) => {
                    // To the key's mirror, which batches it into D1.
                    let records = MirroredRecords {
                        d1: D1Records {
                            db: &db,
                            fail_commit: false,
                        },
                        env: &d1_env,
                    };
                    // The slot stays unsynced: the alarm's time moving to the
                    // answer's expiry is the one write; an upsert at expiry's
                    // alarm would be harmless anyway.
                    gate.write_behind(&records, &key, &record).await
                }
                Err(e) => Err(e.to_string()),
            };
            match written {
                // Else the alarm set above comes back to retry.
                Err(e) => {
                    console_error!(
                        "KeyGate: handing the record to its mirror failed (the alarm retries): {e}"
                    )
                }
                // The key's alarm moves to the answer's expiry — unless the key
                // was released (or answered anew) meanwhile.
                Ok(()) if gate.still_answer(expires_at).unwrap_or(false) => {
                    arm(&slots, &alarm_at, storage, &name, expires_at).await
                }
                Ok(()) => {}
            }
        });
    }
}

/// Records that the key `name`'s slot is next due for the alarm at `when`, and
/// moves the object's alarm to the earliest due slot unless `alarm_at` says it
/// is set so already. The alarm call is made before this returns (so it commits
/// with the turn's other writes); the future only reports its result.
fn arm(
    slots: &Slots,
    alarm_at: &AlarmAt,
    storage: Storage,
    name: &str,
    when: i64,
) -> impl std::future::Future<Output = ()> + 'static {
    if let Err(e) = slots.set_due(name, when) {
        console_error!("KeyGate: recording when the alarm is due failed: {e}");
    }
    let next = slots.next_due().unwrap_or_else(|e| {
        console_error!("KeyGate: reading when the alarm is due failed: {e}");
        Some(when)
    });
    let target = waiting::alarm_to_set(alarm_at.get(), next);
    if let Some(t) = target {
        alarm_at.set(Some(Some(t)));
    }
    let mut call = Box::pin(async move {
        if let Some(t) = target {
            set_alarm_logged(&storage, t).await
        }
    });
    // One poll makes the call into the runtime now.
    let done = call.as_mut().now_or_never().is_some();
    async move {
        if !done {
            call.await
        }
    }
}

/// Sets the object's alarm; a failure is only logged (what the alarm guards has
/// a fallback: a lease is taken over when it expires, a record write is retried).
pub(super) async fn set_alarm_logged(storage: &Storage, when: i64) {
    if let Err(e) = storage.set_alarm(at(when)).await {
        console_error!("KeyGate: set_alarm failed: {e}");
    }
}

/// A handler running longer than this gets its lease alarm armed.
const LEASE_ALARM_AFTER: Duration = Duration::from_millis(50);
/// How long a sharded gate object collects the records of its answers before
/// its alarm hands them to the record mirrors together: at most five hand-overs
/// a second per busy object, and a record reaches its mirror about as soon as an
/// object per key's would (the mirror's own lull then batches them for D1).
/// At 1 s, records answered just before others kept the mirror's lull going and
/// reached D1 seconds later (`/metrics` missed a 4 s-TTL answer in its lifetime).
pub(super) const HAND_OVER_AFTER_MS: i64 = 200;
/// How soon the alarm retries a D1 record write that failed.
pub(super) const SYNC_RETRY_MS: i64 = 30_000;
