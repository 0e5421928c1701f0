//! `KeyGate`: the Durable Object that owns one idempotency key (one
//! `(scope, route, key)`) and serializes every request for it.
//!
//! Its decisions are plain code in [`crate::idempotency::gate`] over the
//! object's SQLite ([`SqlSlots`]); this file runs them: it reads the body, runs
//! the handler under the lease (renewing it while the handler lives), commits to
//! D1, answers the requests waiting on the key, and handles the alarm. D1's
//! `idempotency_records` stays the system of record; the handler's rows and that
//! record are committed in one D1 batch.

mod answers;

use crate::clock::WallClock;
use crate::commands::Endpoint;
use crate::config::{Config, ConfigErrors};
use crate::envelope::{Envelope, GateOutcome, ENVELOPE_HEADER};
use crate::http::{self, Timings, EXPIRES_HEADER, TAKEOVER_HEADER};
use crate::idempotency::execute::{Executed, Held, KeyState, Released};
use crate::idempotency::gate::{
    Clock, Committed, Decision, Gate, LiveHolders, Releaser, StoreError,
};
use crate::idempotency::StoredResponse;
use crate::mirror_do::MirroredRecords;
use crate::problem::ApiError;
use crate::routes::{self, AfterCommit};
use crate::slot_sql::SqlSlots;
use crate::store::D1Records;
use answers::{Finished, ForWaiters};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::FutureExt;
use std::cell::RefCell;
use std::time::Duration;
use worker::{
    console_error, durable_object, wasm_bindgen, Delay, DurableObject, Env, Request, Response,
    Result, ScheduledTime, State, Storage,
};

#[durable_object]
pub struct KeyGate {
    state: State,
    env: Env,
    slots: SqlSlots,
    config: Config,
    /// Settings that do not parse: the object refuses requests (the Worker
    /// already does); its alarm still settles what earlier requests left.
    config_error: Option<ConfigErrors>,
    waiters: RefCell<Vec<oneshot::Sender<Finished>>>,
    /// Lease tokens of the handlers running in this instance: their leases are
    /// never taken over (see `Gate::admit_with`).
    live: LiveHolders,
}

/// The key's decisions over this object's SQLite and the runtime's clock.
fn gate_over(
    slots: &SqlSlots,
    lease_ms: i64,
    max_answer_bytes: usize,
) -> Gate<&SqlSlots, WallClock> {
    Gate {
        store: slots,
        clock: WallClock,
        lease_ms,
        max_answer_bytes,
    }
}

fn now_ms() -> i64 {
    WallClock.now_ms()
}

fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
        ms as f64,
    )))
}

fn store_err(e: StoreError) -> worker::Error {
    worker::Error::RustError(format!("object storage: {e}"))
}

fn too_large(limit: usize) -> StoredResponse {
    http::problem_stored(&ApiError::AnswerTooLarge { limit })
}

impl DurableObject for KeyGate {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let slots = SqlSlots::new(sql);
        // A new object instance means no request of the previous one still runs:
        // its isolate died, or its wasm instance did (after a Rust panic the shim
        // re-creates the instance and re-constructs every object). A lease in
        // storage is a dead holder's: expire it, so the next request takes over
        // at once (adopting an answer that holder committed to D1) instead of
        // answering 409 until the lease runs out.
        if let Err(e) = gate_over(&slots, 0, usize::MAX).expire_dead_holder() {
            console_error!("KeyGate: expiring a dead holder's lease failed: {e}");
        }
        crate::panic_guard::install();
        let (config, config_error) = match crate::config::cached(
            |n| env.var(n).ok().map(|v| v.to_string()),
            &Endpoint::ALL.map(Endpoint::template),
        ) {
            Ok(c) => (c, None),
            Err(e) => {
                console_error!("KeyGate: configuration refused: {e}");
                (Config::default(), Some(e))
            }
        };
        KeyGate {
            state,
            env,
            slots,
            config,
            config_error,
            waiters: RefCell::new(Vec::new()),
            live: LiveHolders::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let _in_flight = crate::panic_guard::InFlight::enter(&self.state);
        let envelope: Envelope = match req.headers().get(ENVELOPE_HEADER)? {
            Some(raw) => {
                serde_json::from_str(&raw).map_err(|e| worker::Error::RustError(e.to_string()))?
            }
            None => {
                return Ok(http::problem(&ApiError::bad_request(
                    "internal-protocol",
                    "missing envelope",
                )))
            }
        };
        if let Some(e) = &self.config_error {
            return Ok(http::problem(&ApiError::Misconfigured {
                vars: e.vars().into_iter().map(String::from).collect(),
            }));
        }
        let path = req.path();
        let result = match (req.method(), path.as_str()) {
            (worker::Method::Post, "/execute") => self.execute(req, &envelope).await,
            (worker::Method::Get, "/state") => self.describe(&envelope).await,
            (worker::Method::Delete, "/state") => self.release_key(&envelope).await,
            _ => Ok(http::problem(&ApiError::NotFound(
                "no such object route".into(),
            ))),
        };
        result.or_else(|e| {
            console_error!("KeyGate {}: {e}", envelope.route);
            Ok(answers::with_outcome(
                http::problem(&ApiError::StorageUnavailable),
                GateOutcome::Failed,
            ))
        })
    }

    async fn alarm(&self) -> Result<Response> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        let records = MirroredRecords {
            d1: self.records(&db),
            env: &self.env,
        };
        let done = self
            .gate()
            .on_alarm(&records, |t| self.live.contains(t), SYNC_RETRY_MS)
            .await;
        if let Some(e) = &done.error {
            console_error!("KeyGate alarm: {e} (retried)");
        }
        match done.next {
            Some(t) => self.state.storage().set_alarm(at(t)).await?,
            // The answer expired, or a dead holder left nothing: drop the database.
            None if done.error.is_none() => self.vacate_if_empty().await,
            None => {}
        }
        Response::ok("ok")
    }
}

impl KeyGate {
    fn gate(&self) -> Gate<&SqlSlots, WallClock> {
        gate_over(
            &self.slots,
            self.config.lease_ms,
            self.config.max_answer_bytes,
        )
    }

    fn notify(&self, finished: &Finished) {
        for tx in self.waiters.borrow_mut().drain(..) {
            let _ = tx.send(finished.clone());
        }
    }

    async fn execute(&self, mut req: Request, env: &Envelope) -> Result<Response> {
        // The body is read only by the request that executes, after its lease is
        // written: the decision needs only the fingerprint, and a new object's
        // schema and the lease then commit together (one write, one sync).
        if env.fingerprint.is_none() {
            return Ok(http::problem(&ApiError::bad_request(
                "internal-protocol",
                "an execute envelope carries the request's fingerprint",
            )));
        }
        let wait_deadline = now_ms() + env.wait_ms;
        let mut waited = false;
        loop {
            // Atomic: read, decide, write the lease — `admit_with` never awaits.
            let decision = self
                .gate()
                .admit_with(
                    &env.record_key(),
                    env.fingerprint_str(),
                    &env.caller_sub,
                    || crate::ids::random_hex(16),
                    |t| self.live.contains(t),
                )
                .map_err(store_err)?;
            match decision {
                Decision::Execute {
                    token,
                    now,
                    takeover,
                } => {
                    let answer = {
                        // Known live until it has answered, however it ends.
                        let _live = self.live.enter(&token);
                        let body = match req.bytes().await {
                            Ok(b) => b,
                            Err(e) => {
                                self.gate().release(&token).map_err(store_err)?;
                                return Err(e);
                            }
                        };
                        self.run(env, &body, &token, now, takeover).await
                    };
                    // Released (a 5xx, a throw): nothing stays behind.
                    self.vacate_if_empty().await;
                    return Ok(answer);
                }
                Decision::Replay {
                    response,
                    expires_at,
                } => return Ok(answers::replay(env, &response, waited, expires_at)),
                Decision::Mismatch => {
                    return Ok(answers::with_outcome(
                        http::problem(&ApiError::KeyReused {
                            key: env.key.to_string(),
                        }),
                        GateOutcome::Mismatch,
                    ))
                }
                Decision::InFlight { lease_expires_at } => {
                    let now = now_ms();
                    if now >= wait_deadline {
                        return Ok(answers::with_outcome(
                            http::problem(&ApiError::KeyInFlight {
                                key: env.key.to_string(),
                            }),
                            GateOutcome::Conflict,
                        ));
                    }
                    waited = true;
                    let (tx, rx) = oneshot::channel();
                    self.waiters.borrow_mut().push(tx);
                    // Wake at the first answer, at the end of the wait, or when the
                    // lease ends (renewed if its holder lives; else take over).
                    let wake = wait_deadline.min(lease_expires_at + 1) - now;
                    let timer = Delay::from(Duration::from_millis(wake.max(1) as u64));
                    if let Either::Left((Ok(finished), _)) = select(rx, timer).await {
                        return Ok(answers::to_waiter(env, finished));
                    }
                }
            }
        }
    }

    /// The answer to the request that ran; its waiters get theirs.
    fn answer_run<A>(&self, env: &Envelope, executed: Executed<A>) -> Response {
        let (response, waiters) = answers::of_run(env, executed);
        match waiters {
            ForWaiters::Send(finished) => self.notify(&finished),
            // They sent the payload that lost: they re-decide and get 422 too.
            ForWaiters::Redecide => self.waiters.borrow_mut().clear(),
        }
        response
    }

    /// Runs the handler under the lease `token` (renewed while it runs), commits
    /// or releases (`idempotency::execute`), and answers this request and the
    /// ones waiting on the key. Never leaves the lease held on a failure.
    async fn run(
        &self,
        env: &Envelope,
        body: &[u8],
        token: &str,
        started: i64,
        takeover: bool,
    ) -> Response {
        let db = match self.env.d1(crate::config::DB_BINDING) {
            Ok(db) => db,
            Err(e) => return self.answer_run(env, Executed::<AfterCommit>::Failed(e.to_string())),
        };
        let key = env.record_key();
        let held = Held {
            key: &key,
            fingerprint: env.fingerprint_str(),
            token,
            started,
            takeover,
            ttl: self
                .config
                .ttl
                .for_route(&env.template, env.param.as_deref()),
            force_commit: env.test_fail.is_some(),
        };
        let records = D1Records {
            db: &db,
            fail_commit: env.test_fail.as_deref() == Some("storage"),
        };
        let mut timings = Timings::default();
        // The handler's own time (an origin function's call), summed over its
        // runs: Server-Timing `handler`, the log line's `origin_ms`.
        let handler_ms = std::cell::Cell::new(0.0);
        let handler = || async {
            let handler_started = Timings::now();
            if env.test_delay_ms > 0 {
                Delay::from(Duration::from_millis(env.test_delay_ms)).await;
            }
            let out = crate::commands::run(&db, &self.config, env, body, started).await;
            handler_ms.set(handler_ms.get() + Timings::now() - handler_started);
            out
        };
        let run_started = Timings::now();
        let gate = self.gate();
        let run = Box::pin(gate.run_held(&held, &records, handler, too_large));
        let keep = Box::pin(self.keep_lease(token, started + self.config.lease_ms));
        let mut executed = match select(run, keep).await {
            Either::Left((executed, _)) => executed,
            Either::Right((_, run)) => run.await,
        };
        timings.since("run", run_started);
        timings.record("handler", handler_ms.get());
        // The alarm moves to the answer's expiry; a record written behind the
        // answer sets its own retry alarm first.
        match &executed {
            Executed::Stored {
                response,
                expires_at,
                write_behind: true,
                ..
            } => self.sync_record_later(env, response, started, *expires_at),
            Executed::Stored { expires_at, .. } => self.arm_later(*expires_at),
            Executed::Adopted(c) => self.arm_later(c.expires_at),
            _ => {}
        }
        if let Executed::Stored { after, .. } = &mut executed {
            if let Some(after) = after.take() {
                // Side effects that need the committed rows (e.g. dispatching a
                // job). They run once: a replay never reaches this point.
                routes::after_commit(&db, &self.config, after).await;
            }
        }
        let mut answer = self.answer_run(env, executed);
        timings.apply(&mut answer);
        if takeover {
            let _ = answer.headers_mut().set(TAKEOVER_HEADER, "1");
        }
        answer
    }

    /// Drops the object's whole database (`deleteAll`, which also clears the
    /// alarm) once its slot is empty and no request of this instance runs or
    /// waits: Cloudflare keeps an object's SQLite database, ~12 KB at least, until
    /// then, so without this every key ever used would cost storage forever.
    /// The check and the `deleteAll` call happen in one turn (the future is
    /// polled at once): no request can write a lease in between.
    async fn vacate_if_empty(&self) {
        if !self.waiters.borrow().is_empty() || !self.live.is_empty() {
            return;
        }
        match self.gate().vacant() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                console_error!("KeyGate: reading the slot before vacating failed: {e}");
                return;
            }
        }
        self.slots.forget();
        if let Err(e) = self.state.storage().delete_all().await {
            console_error!("KeyGate: deleteAll failed: {e}");
        }
    }

    /// Keeps a live holder's lease: arms the alarm (so a holder that dies is
    /// recovered without a request) and renews the lease every third of its
    /// length for as long as the handler runs — the lease only bounds how long a
    /// *dead* holder blocks the key. A storage write made before the answer holds
    /// the answer back (output gate), so nothing is written for handlers done
    /// within LEASE_ALARM_AFTER; one that dies sooner is recovered by the next
    /// request taking over its expired lease. Ends only if the lease is lost.
    async fn keep_lease(&self, token: &str, first_expiry: i64) {
        Delay::from(LEASE_ALARM_AFTER).await;
        let storage = self.state.storage();
        set_alarm_logged(&storage, first_expiry).await;
        let every = Duration::from_millis((self.config.lease_ms / 3).max(50) as u64);
        loop {
            Delay::from(every).await;
            match self.gate().renew(token) {
                Ok(Some(until)) => set_alarm_logged(&storage, until).await,
                Ok(None) => return,
                Err(e) => console_error!("KeyGate: renewing the lease failed: {e}"),
            }
        }
    }

    /// Arms the alarm at `when`, after the answer has gone out (background).
    fn arm_later(&self, when: i64) {
        let storage = self.state.storage();
        self.state
            .wait_until(async move { set_alarm_logged(&storage, when).await });
    }

    fn records<'a>(&self, db: &'a worker::D1Database) -> D1Records<'a> {
        D1Records {
            db,
            fail_commit: false,
        }
    }

    /// `GET /v1/idempotency/keys/{key}`: the key's state.
    async fn describe(&self, env: &Envelope) -> Result<Response> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        let state = self
            .gate()
            .describe(&self.records(&db), &env.record_key())
            .await
            .map_err(worker::Error::RustError)?;
        Ok(match state {
            Some(state) => {
                let mut body = serde_json::to_value(&state)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                body["key"] = env.key.as_str().into();
                body["route"] = env.route.as_str().into();
                let expires_at = match state {
                    KeyState::Completed { expires_at, .. } => Some(expires_at),
                    KeyState::Processing { .. } => None,
                };
                if let Some(at) = expires_at {
                    // The same date the answer's `Idempotency-Expires` states.
                    body["expires"] = http::http_date(at).into();
                }
                let mut resp = http::json(200, &body);
                if let Some(at) = expires_at {
                    let _ = resp.headers_mut().set(EXPIRES_HEADER, &at.to_string());
                }
                resp
            }
            None => {
                // Asked about a key it never held (or no longer does).
                self.vacate_if_empty().await;
                http::problem(&ApiError::NotFound(
                    "no live idempotency record for this key and route".into(),
                ))
            }
        })
    }

    /// `DELETE /v1/idempotency/keys/{key}`: forget the key so a retry runs again
    /// — refused while a request holds it, and to anyone but its owner or an admin.
    async fn release_key(&self, env: &Envelope) -> Result<Response> {
        let who = Releaser {
            sub: &env.caller_sub,
            admin: env.admin,
            own_scope: env.own_scope(),
        };
        let db = self.env.d1(crate::config::DB_BINDING)?;
        // Through the key's mirror: the release also drops a record waiting there.
        let records = MirroredRecords {
            d1: self.records(&db),
            env: &self.env,
        };
        let released = self
            .gate()
            .release_everywhere(&records, &env.record_key(), &who)
            .await
            .map_err(worker::Error::RustError)?;
        Ok(match released {
            Released::InFlight => http::problem(&ApiError::KeyInFlight {
                key: env.key.to_string(),
            }),
            Released::Forbidden => http::problem(&ApiError::Forbidden(
                "only the key's owner or an admin may release it".into(),
            )),
            Released::Done { existed } => {
                self.vacate_if_empty().await;
                if existed {
                    Response::empty()?.with_status(204)
                } else {
                    http::problem(&ApiError::NotFound(
                        "no idempotency record for this key and route".into(),
                    ))
                }
            }
        })
    }

    /// Hands the D1 record of an answer just made final in the slot to the key's
    /// record mirror (write-behind, after the answer), which batches it into D1.
    /// Called in the same turn as `finish`: the retry alarm is set before anything
    /// is awaited, so it commits with the answer (one write, one sync) and a crash
    /// before the mirror has the record still leaves an alarm that sends it again.
    /// Once the mirror has it (durably), the alarm moves to the answer's expiry.
    fn sync_record_later(
        &self,
        env: &Envelope,
        response: &StoredResponse,
        created_at: i64,
        expires_at: i64,
    ) {
        let storage = self.state.storage();
        let retry_at = now_ms() + SYNC_RETRY_MS;
        let retry_storage = self.state.storage();
        let mut retry = Box::pin(async move { set_alarm_logged(&retry_storage, retry_at).await });
        // One poll makes the call into the runtime now; the result is awaited below.
        let _ = retry.as_mut().now_or_never();
        let (slots, d1_env, lease_ms) =
            (self.slots.clone(), self.env.clone(), self.config.lease_ms);
        let key = env.record_key();
        let record = Committed {
            fingerprint: env.fingerprint_str().to_string(),
            response: response.clone(),
            created_at,
            expires_at,
        };
        self.state.wait_until(async move {
            retry.await;
            let gate = gate_over(&slots, lease_ms, usize::MAX);
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
                    // The slot stays unsynced: marking it would be one more storage
                    // write per execution, and a later alarm's upsert is harmless.
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
                // The alarm moves to the answer's expiry — unless the key was
                // released meanwhile and its object emptied (`vacate_if_empty`).
                Ok(()) if gate.still_answer(expires_at).unwrap_or(false) => {
                    set_alarm_logged(&storage, expires_at).await
                }
                Ok(()) => {}
            }
        });
    }
}

/// Sets the object's alarm; a failure is only logged (what the alarm guards has
/// a fallback: a lease is taken over when it expires, a record write is retried).
async fn set_alarm_logged(storage: &Storage, when: i64) {
    if let Err(e) = storage.set_alarm(at(when)).await {
        console_error!("KeyGate: set_alarm failed: {e}");
    }
}

/// A handler running longer than this gets its lease alarm armed.
const LEASE_ALARM_AFTER: Duration = Duration::from_millis(50);
/// How soon the alarm retries a D1 record write that failed.
const SYNC_RETRY_MS: i64 = 30_000;
