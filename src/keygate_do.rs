//! `KeyGate`: the Durable Object that owns one idempotency key (one
//! `(scope, route, key)`) and serializes every request for it.
//!
//! Its decisions are plain code in [`crate::idempotency::gate`] over the
//! object's SQLite ([`SqlSlots`]); this file runs them: it reads the body, runs
//! the handler under the lease (renewing it while the handler lives), commits to
//! D1, answers the requests waiting on the key, and handles the alarm. D1's
//! `idempotency_records` stays the system of record; the handler's rows and that
//! record are committed in one D1 batch.

use crate::config::Config;
use crate::http::{self, Timings, EXPIRES_HEADER, OUTCOME_HEADER, REPLAY_MARKS};
use crate::idempotency::gate::{
    AlarmStep, Clock, Committed, Decision, Finish, Gate, RecordKey, Release, Releaser, SlotStore,
    StoreError,
};
use crate::idempotency::{SlotState, StoredResponse};
use crate::problem::ApiError;
use crate::routes::{self, HandlerOutcome};
use crate::slot_sql::SqlSlots;
use crate::store::{self, RecordId};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::time::Duration;
use worker::{
    console_error, durable_object, wasm_bindgen, Date, Delay, DurableObject, Env, Request,
    Response, Result, ScheduledTime, State, Storage,
};

/// Header carrying the [`Envelope`] from the Worker to the object.
pub const ENVELOPE_HEADER: &str = "x-idemgate-envelope";

/// What the Worker tells the object about a request, besides its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The caller's tenant: the scope of the handlers' domain rows.
    pub scope: String,
    /// The key's scope (`idempotency::scope`): tenant and subject for a
    /// client's key, the tenant for a server-derived one.
    pub record_scope: String,
    /// The concrete route (`POST /v1/training-jobs/job_1/cancel`): part of the key's identity.
    pub route: String,
    /// Its template (`POST /v1/training-jobs/{id}/cancel`): picks the handler.
    pub template: String,
    /// The path parameter (job id, function name), if the template has one.
    #[serde(default)]
    pub param: Option<String>,
    /// Request headers the handler forwards (origin functions).
    #[serde(default)]
    pub forward: Vec<(String, String)>,
    pub key: String,
    pub fingerprint: String,
    pub caller_sub: String,
    /// The caller has the `admin` role (may release any key of the tenant).
    #[serde(default)]
    pub admin: bool,
    /// `Prefer: wait=N`, capped by `IDEMPOTENCY_MAX_WAIT_SECONDS`; 0 = answer at once.
    pub wait_ms: i64,
    /// Test hooks, honoured only with `IDEMGATE_TEST_HOOKS=1` (checked by the Worker).
    #[serde(default)]
    pub test_delay_ms: u64,
    #[serde(default)]
    pub test_fail: Option<String>,
}

impl Envelope {
    fn record_id(&self) -> RecordId<'_> {
        RecordId {
            scope: &self.record_scope,
            route: &self.route,
            key: &self.key,
        }
    }

    fn record_key(&self) -> RecordKey {
        RecordKey {
            scope: self.record_scope.clone(),
            route: self.route.clone(),
            key: self.key.clone(),
        }
    }

    /// The key sent to an origin function (never the raw client key).
    pub fn forwarded_key(&self) -> String {
        crate::idempotency::scope::forwarded_key(&self.record_scope, &self.route, &self.key)
    }

    /// Whether the key's scope is the caller's own (tenant and subject).
    fn own_scope(&self) -> bool {
        self.record_scope
            == crate::idempotency::scope::Scope::client(&self.scope, &self.caller_sub).encode()
    }
}

/// A finished execution, as handed to the requests waiting on it.
#[derive(Clone)]
struct Finished {
    response: StoredResponse,
    /// Stored answers reach waiters as replays; a transient failure is passed as is.
    stored: bool,
    /// When a stored answer expires.
    expires_at: i64,
}

/// The runtime's clock.
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> i64 {
        Date::now().as_millis() as i64
    }
}

#[durable_object]
pub struct KeyGate {
    state: State,
    env: Env,
    slots: SqlSlots,
    config: Config,
    waiters: RefCell<Vec<oneshot::Sender<Finished>>>,
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

impl From<store::Record> for Committed {
    fn from(r: store::Record) -> Self {
        Committed {
            fingerprint: r.fingerprint,
            response: r.response,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

impl DurableObject for KeyGate {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let slots = SqlSlots::open(sql.clone()).unwrap_or_else(|e| {
            console_error!("KeyGate: preparing the slot tables failed: {e}");
            SqlSlots(sql)
        });
        // A new object instance means no request of the previous one still runs:
        // its isolate died, or its wasm instance did (after a Rust panic the shim
        // re-creates the instance and re-constructs every object). A lease in
        // storage is a dead holder's: expire it, so the next request takes over
        // at once (adopting an answer that holder committed to D1) instead of
        // answering 409 until the lease runs out.
        let gate = Gate {
            store: &slots,
            clock: WallClock,
            lease_ms: 0,
            max_answer_bytes: usize::MAX,
        };
        if let Err(e) = gate.expire_dead_holder() {
            console_error!("KeyGate: expiring a dead holder's lease failed: {e}");
        }
        crate::panic_guard::install();
        let config = crate::frontend_worker::config(&env);
        KeyGate {
            state,
            env,
            slots,
            config,
            waiters: RefCell::new(Vec::new()),
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
            Ok(with_outcome(
                http::problem(&ApiError::StorageUnavailable),
                "failed",
            ))
        })
    }

    async fn alarm(&self) -> Result<Response> {
        // Re-arms for a live lease or answer, writes a D1 record that did not
        // land, settles a dead holder (adopting what it committed), and clears
        // an expired answer.
        let gate = self.gate();
        let storage = self.state.storage();
        match gate.alarm().map_err(store_err)? {
            AlarmStep::Idle | AlarmStep::Cleared => {}
            AlarmStep::Rearm(t) => storage.set_alarm(at(t)).await?,
            AlarmStep::Sync(data) => {
                if let SlotState::Completed {
                    response,
                    expires_at,
                } = &data.slot.state
                {
                    let u = Unsynced {
                        id: data.record.clone(),
                        record: store::Record {
                            fingerprint: data.slot.fingerprint.clone(),
                            response: response.clone(),
                            created_at: data.created_at,
                            expires_at: *expires_at,
                        },
                    };
                    match write_record(&self.slots, &self.env, &u).await {
                        Ok(()) => {
                            gate.mark_synced(*expires_at).map_err(store_err)?;
                            storage.set_alarm(at(*expires_at)).await?;
                        }
                        Err(e) => {
                            console_error!("KeyGate: the D1 record write failed again: {e}");
                            storage.set_alarm(at(now_ms() + SYNC_RETRY_MS)).await?;
                        }
                    }
                }
            }
            AlarmStep::CheckCommitted { token, record } => {
                let db = self.env.d1(crate::config::DB_BINDING)?;
                let id = RecordId {
                    scope: &record.scope,
                    route: &record.route,
                    key: &record.key,
                };
                match store::find_record(&db, &id, now_ms()).await {
                    Ok(found) => {
                        let found = found.map(Committed::from);
                        if let Some(t) = gate
                            .settle_dead_holder(&token, found.as_ref())
                            .map_err(store_err)?
                        {
                            storage.set_alarm(at(t)).await?;
                        }
                    }
                    Err(e) => {
                        console_error!("KeyGate: looking for a dead holder's answer failed: {e}");
                        storage.set_alarm(at(now_ms() + SYNC_RETRY_MS)).await?;
                    }
                }
            }
        }
        Response::ok("ok")
    }
}

impl KeyGate {
    fn gate(&self) -> Gate<&SqlSlots, WallClock> {
        Gate {
            store: &self.slots,
            clock: WallClock,
            lease_ms: self.config.lease_ms,
            max_answer_bytes: self.config.max_answer_bytes,
        }
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
        let wait_deadline = now_ms() + env.wait_ms;
        let mut waited = false;
        loop {
            // Atomic: read, decide, write the lease — `admit` never awaits.
            let decision = self
                .gate()
                .admit(&env.record_key(), &env.fingerprint, &env.caller_sub, || {
                    crate::ids::random_hex(16)
                })
                .map_err(store_err)?;
            match decision {
                Decision::Execute {
                    token,
                    now,
                    takeover,
                } => {
                    let body = match req.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            self.gate().release(&token).map_err(store_err)?;
                            return Err(e);
                        }
                    };
                    return Ok(self.run(env, &body, &token, now, takeover).await);
                }
                Decision::Replay {
                    response,
                    expires_at,
                } => return Ok(self.replay(env, &response, waited, expires_at)),
                Decision::Mismatch => {
                    return Ok(with_outcome(
                        http::problem(&ApiError::KeyReused {
                            key: env.key.clone(),
                        }),
                        "mismatch",
                    ))
                }
                Decision::InFlight { lease_expires_at } => {
                    let now = now_ms();
                    if now >= wait_deadline {
                        return Ok(with_outcome(
                            http::problem(&ApiError::KeyInFlight {
                                key: env.key.clone(),
                            }),
                            "conflict",
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
                        return Ok(self.answer_waiter(env, finished));
                    }
                }
            }
        }
    }

    fn preference_applied(&self, env: &Envelope) -> String {
        format!("wait={}", (env.wait_ms + 999) / 1000)
    }

    fn replay(
        &self,
        env: &Envelope,
        resp: &StoredResponse,
        waited: bool,
        expires_at: i64,
    ) -> Response {
        let applied = self.preference_applied(env);
        let expires = expires_at.to_string();
        let mut extra: Vec<(&str, &str)> = REPLAY_MARKS.to_vec();
        extra.push(("idempotency-key", &env.key));
        extra.push((EXPIRES_HEADER, &expires));
        if waited {
            extra.push(("preference-applied", &applied));
        }
        with_outcome(http::stored(resp, &extra), "replayed")
    }

    fn answer_waiter(&self, env: &Envelope, finished: Finished) -> Response {
        if finished.stored {
            return self.replay(env, &finished.response, true, finished.expires_at);
        }
        let applied = self.preference_applied(env);
        with_outcome(
            http::stored(
                &finished.response,
                &[
                    ("idempotency-key", &env.key),
                    ("preference-applied", &applied),
                ],
            ),
            "failed",
        )
    }

    /// Runs the handler under the lease `token` and commits or releases. Never
    /// leaves the lease held on a failure: a storage error releases it (503).
    async fn run(
        &self,
        env: &Envelope,
        body: &[u8],
        token: &str,
        started: i64,
        takeover: bool,
    ) -> Response {
        let run = Box::pin(self.run_under_lease(env, body, token, started, takeover));
        let keep = Box::pin(self.keep_lease(token, started + self.config.lease_ms));
        let answer = match select(run, keep).await {
            Either::Left((answer, _)) => answer,
            Either::Right((_, run)) => run.await,
        };
        answer.unwrap_or_else(|e| self.fail(env, token, e))
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

    async fn run_under_lease(
        &self,
        env: &Envelope,
        body: &[u8],
        token: &str,
        started: i64,
        takeover: bool,
    ) -> Result<Response> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        if takeover {
            // The previous holder may have committed before it died.
            if let Some(rec) = store::find_record(&db, &env.record_id(), started).await? {
                return self.adopt(env, token, rec);
            }
        }
        if env.test_delay_ms > 0 {
            Delay::from(Duration::from_millis(env.test_delay_ms)).await;
        }
        // A handler reads state and returns writes guarded by optimistic checks
        // (unique sequence numbers); if another request committed in between, the
        // batch fails on a constraint and the handler runs again on fresh state.
        let mut attempt = 0;
        let mut timings = Timings::default();
        let gate = self.gate();
        let (response, expires_at, after) = loop {
            attempt += 1;
            let handler_started = Timings::now();
            let outcome = routes::execute(&db, &self.config, env, body, started).await;
            timings.since("handler", handler_started);
            let (response, mut writes, after) = match outcome {
                Ok(HandlerOutcome::Commit {
                    response,
                    writes,
                    after,
                }) if response.is_storable() => (response, writes, after),
                Ok(HandlerOutcome::Commit { response, .. }) => {
                    return self.release_with(env, token, response)
                }
                Ok(HandlerOutcome::Release { response, writes }) => {
                    if writes.is_empty() {
                        return self.release_with(env, token, response);
                    }
                    match db.batch(writes).await {
                        Ok(_) => return self.release_with(env, token, response),
                        Err(e) if is_conflict(&e) && attempt <= CONFLICT_RETRIES => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    console_error!("handler {} failed: {e}", env.route);
                    return self.release_with(
                        env,
                        token,
                        http::problem_stored(&ApiError::Internal),
                    );
                }
            };
            // Above MAX_STORED_ANSWER_BYTES the final answer is the too-large
            // problem, for this caller and every retry alike.
            let response = gate.bounded(response, too_large);
            let completed = now_ms();
            let expires_at = completed + self.config.ttl_ms;
            if writes.is_empty()
                && after.is_none()
                && env.test_fail.is_none()
                && gate.holds(token).map_err(store_err)?
            {
                // Write-behind: an answer with no rows of its own (an origin
                // function's, a stored 4xx) is final once it is in this object's
                // SQLite — durable, and the only writer for the key. Its D1 record
                // follows after the answer; the alarm retries it if that fails.
                gate.finish(token, response.clone(), expires_at, false, too_large)
                    .map_err(store_err)?;
                self.sync_record_later(env, &response, started, expires_at);
                break (response, expires_at, after);
            }
            writes.extend(store::record_statements(
                &db,
                &env.record_id(),
                &env.fingerprint,
                &response,
                started,
                completed,
                expires_at,
            )?);
            if env.test_fail.as_deref() == Some("storage") {
                // Test hook: a statement that fails inside the batch, so the whole
                // batch (domain rows included) must roll back.
                writes.push(db.prepare("INSERT INTO no_such_table_simulated_failure VALUES (1)"));
            }
            let batch_started = Timings::now();
            let committed = db.batch(writes).await;
            timings.since("d1", batch_started);
            match committed {
                Ok(_) => {
                    if let Finish::Stored(_) = gate
                        .finish(token, response.clone(), expires_at, true, too_large)
                        .map_err(store_err)?
                    {
                        self.arm_later(expires_at);
                    }
                    break (response, expires_at, after);
                }
                Err(e) => {
                    console_error!("D1 batch for {} failed: {e}", env.route);
                    // A live record means another holder committed first: that is the answer.
                    match store::find_record(&db, &env.record_id(), now_ms()).await? {
                        Some(rec) => return self.adopt(env, token, rec),
                        None if is_conflict(&e) && attempt <= CONFLICT_RETRIES => continue,
                        None => return Err(e),
                    }
                }
            }
        };
        if let Some(after) = after {
            // Side effects that need the committed rows (e.g. dispatching a job).
            // They run once: a replay never reaches this point.
            routes::after_commit(&db, &self.config, after).await;
        }
        self.notify(&Finished {
            response: response.clone(),
            stored: true,
            expires_at,
        });
        let expires = expires_at.to_string();
        let mut answer = with_outcome(
            http::stored(
                &response,
                &[("idempotency-key", &env.key), (EXPIRES_HEADER, &expires)],
            ),
            "executed",
        );
        timings.apply(&mut answer);
        Ok(answer)
    }

    /// Takes a committed D1 record as this key's answer (if `token` still holds
    /// the lease, the slot keeps it too).
    fn adopt(&self, env: &Envelope, token: &str, rec: store::Record) -> Result<Response> {
        let gate = self.gate();
        if gate.holds(token).map_err(store_err)? {
            gate.adopt(
                &env.record_key(),
                &env.caller_sub,
                &Committed::from(rec.clone()),
            )
            .map_err(store_err)?;
            self.arm_later(rec.expires_at);
        }
        if rec.fingerprint != env.fingerprint {
            // Waiters sent the payload that lost; they re-decide and get 422 too.
            self.waiters.borrow_mut().clear();
            return Ok(with_outcome(
                http::problem(&ApiError::KeyReused {
                    key: env.key.clone(),
                }),
                "mismatch",
            ));
        }
        self.notify(&Finished {
            response: rec.response.clone(),
            stored: true,
            expires_at: rec.expires_at,
        });
        Ok(self.replay(env, &rec.response, false, rec.expires_at))
    }

    /// Releases the lease and answers with a response that is not stored.
    fn release_with(
        &self,
        env: &Envelope,
        token: &str,
        response: StoredResponse,
    ) -> Result<Response> {
        self.gate().release(token).map_err(store_err)?;
        self.notify(&Finished {
            response: response.clone(),
            stored: false,
            expires_at: 0,
        });
        Ok(with_outcome(
            http::stored(&response, &[("idempotency-key", &env.key)]),
            "failed",
        ))
    }

    /// A storage failure under the lease: release it (best effort) and answer 503.
    fn fail(&self, env: &Envelope, token: &str, e: worker::Error) -> Response {
        console_error!("storage failure for {}: {e}", env.route);
        let problem = ApiError::StorageUnavailable.to_problem();
        let mut resp = http::problem_stored(&ApiError::StorageUnavailable);
        if let Some(s) = problem.retry_after {
            resp.headers.push(("retry-after".into(), s.to_string()));
        }
        self.release_with(env, token, resp).unwrap_or_else(|e| {
            console_error!("KeyGate: releasing the lease failed too (it expires): {e}");
            with_outcome(http::problem(&ApiError::StorageUnavailable), "failed")
        })
    }

    /// `GET /v1/idempotency/keys/{key}`: the key's state.
    async fn describe(&self, env: &Envelope) -> Result<Response> {
        let now = now_ms();
        let current = self.slots.load().map_err(store_err)?;
        let body = match current {
            Some(d) => match d.slot.state {
                SlotState::Processing {
                    lease_expires_at, ..
                } if lease_expires_at > now => serde_json::json!({
                    "key": env.key, "route": env.route, "state": "processing",
                    "fingerprint": d.slot.fingerprint, "created_at": d.created_at,
                    "lease_expires_at": lease_expires_at,
                }),
                SlotState::Completed {
                    response,
                    expires_at,
                } if expires_at > now => serde_json::json!({
                    "key": env.key, "route": env.route, "state": "completed",
                    "fingerprint": d.slot.fingerprint, "created_at": d.created_at,
                    "response_status": response.status, "expires_at": expires_at,
                }),
                _ => return self.describe_record(env, now).await,
            },
            None => return self.describe_record(env, now).await,
        };
        Ok(http::json(200, &body))
    }

    async fn describe_record(&self, env: &Envelope, now: i64) -> Result<Response> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        Ok(
            match store::find_record(&db, &env.record_id(), now).await? {
                Some(rec) => http::json(
                    200,
                    &serde_json::json!({
                        "key": env.key, "route": env.route, "state": "completed",
                        "fingerprint": rec.fingerprint, "created_at": rec.created_at,
                        "response_status": rec.response.status, "expires_at": rec.expires_at,
                    }),
                ),
                None => http::problem(&ApiError::NotFound(
                    "no live idempotency record for this key and route".into(),
                )),
            },
        )
    }

    /// `DELETE /v1/idempotency/keys/{key}`: forget the key so a retry runs again
    /// — refused while a request holds it, and to anyone but its owner or an admin.
    async fn release_key(&self, env: &Envelope) -> Result<Response> {
        let who = Releaser {
            sub: &env.caller_sub,
            admin: env.admin,
            own_scope: env.own_scope(),
        };
        let had_slot = match self.gate().release_key(&who).map_err(store_err)? {
            Release::InFlight { .. } => {
                return Ok(http::problem(&ApiError::KeyInFlight {
                    key: env.key.clone(),
                }))
            }
            Release::Forbidden => {
                return Ok(http::problem(&ApiError::Forbidden(
                    "only the key's owner or an admin may release it".into(),
                )))
            }
            Release::Released { had_slot } => had_slot,
        };
        let db = self.env.d1(crate::config::DB_BINDING)?;
        let had_record = store::delete_record(&db, &env.record_id()).await?;
        if had_slot || had_record {
            Ok(Response::empty()?.with_status(204))
        } else {
            Ok(http::problem(&ApiError::NotFound(
                "no idempotency record for this key and route".into(),
            )))
        }
    }

    /// Commits the D1 record of an answer just made final in the slot (write-behind,
    /// after the answer). Called in the same turn as `finish`: the retry alarm is
    /// set before anything is awaited, so it commits with the answer (one write,
    /// one sync) and a crash before D1 has the record still leaves an alarm that
    /// writes it. Once D1 has it, the alarm moves to the answer's expiry.
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
        let (slots, d1_env) = (self.slots.clone(), self.env.clone());
        let unsynced = Unsynced {
            id: env.record_key(),
            record: store::Record {
                fingerprint: env.fingerprint.clone(),
                response: response.clone(),
                created_at,
                expires_at,
            },
        };
        self.state.wait_until(async move {
            retry.await;
            match write_record(&slots, &d1_env, &unsynced).await {
                // Else the alarm set above comes back to retry.
                Err(e) => {
                    console_error!("KeyGate: writing the D1 record failed (the alarm retries): {e}")
                }
                Ok(()) => set_alarm_logged(&storage, expires_at).await,
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

/// A completed answer whose D1 record is written behind it.
struct Unsynced {
    id: RecordKey,
    record: store::Record,
}

/// Upserts a completed answer's D1 record, then takes it back if the key was
/// released while it was on its way.
async fn write_record(slots: &SqlSlots, env: &Env, u: &Unsynced) -> Result<()> {
    let db = env.d1(crate::config::DB_BINDING)?;
    let id = RecordId {
        scope: &u.id.scope,
        route: &u.id.route,
        key: &u.id.key,
    };
    let r = &u.record;
    db.batch(store::record_upsert(
        &db,
        &id,
        &r.fingerprint,
        &r.response,
        r.created_at,
        r.expires_at,
    )?)
    .await?;
    // If the key was released while this write was on its way, the release
    // deleted D1's record before this one landed: take this one back (only this
    // one: a newer answer for the key has another expiry).
    let gate = Gate {
        store: slots,
        clock: WallClock,
        lease_ms: 0,
        max_answer_bytes: usize::MAX,
    };
    if !gate.still_answer(r.expires_at).map_err(store_err)? {
        store::take_back_record(&db, &id, r.expires_at).await?;
    }
    // The slot stays unsynced: marking it would be one more storage write per
    // execution, and a later alarm re-running this upsert is harmless.
    Ok(())
}

/// A handler running longer than this gets its lease alarm armed.
const LEASE_ALARM_AFTER: Duration = Duration::from_millis(50);
/// How soon the alarm retries a D1 record write that failed.
const SYNC_RETRY_MS: i64 = 30_000;

/// How often a handler is re-run after losing an optimistic-concurrency race.
const CONFLICT_RETRIES: u32 = 3;

/// A batch that failed on a constraint: another request changed the same rows.
fn is_conflict(e: &worker::Error) -> bool {
    e.to_string().contains("constraint failed")
}

fn with_outcome(mut resp: Response, outcome: &str) -> Response {
    let _ = resp.headers_mut().set(OUTCOME_HEADER, outcome);
    resp
}
