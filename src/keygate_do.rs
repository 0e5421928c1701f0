//! `KeyGate`: the Durable Object that owns one idempotency key
//! (`{tenant}:{route}:{key}`) and serializes every request for it.
//!
//! Its SQLite holds one `slot` row: the lease while a request runs, then a hot
//! copy of the final answer until it expires (so a replay needs no D1 read). D1's
//! `idempotency_records` stays the system of record; the handler's rows and that
//! record are committed in one D1 batch.
//!
//! The admission check-and-set is `read_slot` → [`decide`] → `write_processing`
//! with no `await` in between: while this object awaits D1 or a timer, other
//! requests for the key run, but none can slip between the read and the write.

use crate::config::Config;
use crate::http::{self, Timings, EXPIRES_HEADER, OUTCOME_HEADER, REPLAY_MARKS};
use crate::idempotency::{decide, Admission, Slot, SlotState, StoredResponse};
use crate::problem::ApiError;
use crate::routes::{self, HandlerOutcome};
use crate::store::{self, RecordId};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::time::Duration;
use worker::{
    console_error, durable_object, wasm_bindgen, Date, Delay, DurableObject, Env, Request,
    Response, Result, ScheduledTime, SqlStorage, SqlStorageValue, State, Storage,
};

/// Header carrying the [`Envelope`] from the Worker to the object.
pub const ENVELOPE_HEADER: &str = "x-idemgate-envelope";

/// What the Worker tells the object about a request, besides its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub scope: String,
    /// The concrete route (`POST /v1/training-jobs/job_1/cancel`): part of the scope.
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
            scope: &self.scope,
            route: &self.route,
            key: &self.key,
        }
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

#[durable_object]
pub struct KeyGate {
    state: State,
    env: Env,
    sql: SqlStorage,
    config: Config,
    waiters: RefCell<Vec<oneshot::Sender<Finished>>>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS slot (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL,
  token TEXT,
  lease_expires_at REAL,
  response_status INTEGER,
  response_headers TEXT,
  response_body TEXT,
  created_at REAL NOT NULL,
  expires_at REAL,
  scope TEXT,
  route TEXT,
  key TEXT,
  -- 0: the answer's D1 record is written behind it (waitUntil), so while the
  -- slot lives an alarm (re-)writes it; the write is an upsert, so that is safe.
  d1_synced INTEGER NOT NULL DEFAULT 1
)";

/// Columns added after the first release, for objects created before them.
const SCHEMA_UPGRADES: &[&str] = &[
    "ALTER TABLE slot ADD COLUMN scope TEXT",
    "ALTER TABLE slot ADD COLUMN route TEXT",
    "ALTER TABLE slot ADD COLUMN key TEXT",
    "ALTER TABLE slot ADD COLUMN d1_synced INTEGER NOT NULL DEFAULT 1",
];

#[derive(Deserialize)]
struct SlotRow {
    fingerprint: String,
    state: String,
    token: Option<String>,
    lease_expires_at: Option<f64>,
    response_status: Option<f64>,
    response_headers: Option<String>,
    response_body: Option<String>,
    expires_at: Option<f64>,
}

fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
        ms as f64,
    )))
}

fn num(v: i64) -> SqlStorageValue {
    SqlStorageValue::Float(v as f64)
}

impl DurableObject for KeyGate {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            console_error!("KeyGate: creating the slot table failed: {e}");
        }
        // Objects created before the newer columns existed get them added; a new
        // object's table has them already (one cheap pragma read, no failing DDL).
        #[derive(Deserialize)]
        struct Count {
            n: f64,
        }
        let has_synced = sql
            .exec(
                "SELECT COUNT(*) AS n FROM pragma_table_info('slot') WHERE name = 'd1_synced'",
                None,
            )
            .and_then(|c| c.to_array::<Count>())
            .map(|rows| rows.first().is_some_and(|r| r.n > 0.0))
            .unwrap_or(true);
        if !has_synced {
            for upgrade in SCHEMA_UPGRADES {
                if let Err(e) = sql.exec(upgrade, None) {
                    console_error!("KeyGate: schema upgrade {upgrade:?} failed: {e}");
                }
            }
        }
        // A new object instance means no request of the previous one still runs:
        // its isolate died, or its wasm instance did (after a Rust panic the shim
        // re-creates the instance and re-constructs every object). A lease in
        // storage is held by a dead holder: expire it, so the next request takes
        // over at once (looking in D1 for an answer that holder may have
        // committed) instead of answering 409 until the lease runs out.
        if let Err(e) = sql.exec(
            "UPDATE slot SET lease_expires_at = 0 WHERE state = 'processing'",
            None,
        ) {
            console_error!("KeyGate: expiring a dead holder's lease failed: {e}");
        }
        crate::panic_guard::install();
        let config = crate::frontend_worker::config(&env);
        KeyGate {
            state,
            env,
            sql,
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
        // Releases a lease whose holder died and drops an expired hot copy; if the
        // slot is still live (the alarm was overwritten or fired early), re-arm it.
        let now = now_ms();
        match self.read_slot()? {
            Some(Slot {
                state:
                    SlotState::Processing {
                        lease_expires_at: t,
                        ..
                    },
                ..
            })
            | Some(Slot {
                state: SlotState::Completed { expires_at: t, .. },
                ..
            }) if t > now => {
                // A completed answer whose write-behind did not reach D1.
                sync_record(&self.sql, &self.env).await?;
                self.state.storage().set_alarm(at(t)).await?;
            }
            Some(_) => self.clear_slot()?,
            None => {}
        }
        Response::ok("ok")
    }
}

impl KeyGate {
    fn read_slot(&self) -> Result<Option<Slot>> {
        let rows: Vec<SlotRow> = self
            .sql
            .exec(
                "SELECT fingerprint, state, token, lease_expires_at, response_status, response_headers, \
                 response_body, expires_at FROM slot WHERE id = 1",
                None,
            )?
            .to_array()?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let state = if r.state == "processing" {
            SlotState::Processing {
                token: r.token.unwrap_or_default(),
                lease_expires_at: r.lease_expires_at.unwrap_or(0.0) as i64,
            }
        } else {
            SlotState::Completed {
                response: store::decode_response(
                    r.response_status.unwrap_or(500.0),
                    r.response_headers.as_deref().unwrap_or("[]"),
                    r.response_body.as_deref().unwrap_or(""),
                )?,
                expires_at: r.expires_at.unwrap_or(0.0) as i64,
            }
        };
        Ok(Some(Slot {
            fingerprint: r.fingerprint,
            state,
        }))
    }

    fn slot_created_at(&self) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct Row {
            created_at: f64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT created_at FROM slot WHERE id = 1", None)?
            .to_array()?;
        Ok(rows.first().map(|r| r.created_at as i64))
    }

    fn write_processing(
        &self,
        env: &Envelope,
        token: &str,
        now: i64,
        lease_expires_at: i64,
    ) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO slot (id, fingerprint, state, token, lease_expires_at, created_at, scope, route, key) \
             VALUES (1, ?, 'processing', ?, ?, ?, ?, ?, ?)",
            vec![
                env.fingerprint.as_str().into(),
                token.into(),
                num(lease_expires_at),
                num(now),
                env.scope.as_str().into(),
                env.route.as_str().into(),
                env.key.as_str().into(),
            ],
        )?;
        Ok(())
    }

    /// Makes the answer final in the slot. `synced` says whether its D1 record
    /// is already committed (else the write-behind or the alarm commits it).
    fn write_completed(
        &self,
        env: &Envelope,
        fingerprint: &str,
        resp: &StoredResponse,
        created_at: i64,
        expires_at: i64,
        synced: bool,
    ) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO slot (id, fingerprint, state, token, lease_expires_at, response_status, \
             response_headers, response_body, created_at, expires_at, scope, route, key, d1_synced) \
             VALUES (1, ?, 'completed', NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                fingerprint.into(),
                SqlStorageValue::Integer(resp.status as i64),
                store::encode_headers(&resp.headers).into(),
                store::encode_body(&resp.body).into(),
                num(created_at),
                num(expires_at),
                env.scope.as_str().into(),
                env.route.as_str().into(),
                env.key.as_str().into(),
                SqlStorageValue::Integer(synced as i64),
            ],
        )?;
        Ok(())
    }

    /// Commits the D1 record of an answer just made final in the slot (write-behind,
    /// after the answer). Called in the same turn as `write_completed`: the retry
    /// alarm is set before anything is awaited, so it commits with the answer (one
    /// write, one sync) and a crash before D1 has the record still leaves an alarm
    /// that writes it. Once D1 has it, the alarm moves to the answer's expiry.
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
        let (sql, d1_env) = (self.sql.clone(), self.env.clone());
        let unsynced = Unsynced {
            scope: env.scope.clone(),
            route: env.route.clone(),
            key: env.key.clone(),
            record: store::Record {
                fingerprint: env.fingerprint.clone(),
                response: response.clone(),
                created_at,
                expires_at,
            },
        };
        self.state.wait_until(async move {
            retry.await;
            match write_record(&sql, &d1_env, &unsynced).await {
                // Else the alarm set above comes back to retry.
                Err(e) => {
                    console_error!("KeyGate: writing the D1 record failed (the alarm retries): {e}")
                }
                Ok(()) => set_alarm_logged(&storage, expires_at).await,
            }
        });
    }

    fn clear_slot(&self) -> Result<()> {
        self.sql.exec("DELETE FROM slot", None)?;
        Ok(())
    }

    /// True while `token` still holds the lease (it may have expired and been
    /// taken over, or been released by `DELETE /v1/idempotency/keys/...`).
    fn holds_lease(&self, token: &str) -> Result<bool> {
        Ok(
            matches!(self.read_slot()?, Some(Slot { state: SlotState::Processing { token: t, .. }, .. }) if t == token),
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
        let wait_deadline = now_ms() + env.wait_ms;
        let mut waited = false;
        loop {
            let now = now_ms();
            // Atomic section: read, decide, write. No await until the lease is written.
            let admission = decide(self.read_slot()?.as_ref(), &env.fingerprint, now);
            match admission {
                Admission::Execute { takeover } => {
                    let token = crate::ids::random_hex(16);
                    self.write_processing(env, &token, now, now + self.config.lease_ms)?;
                    let body = match req.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            self.clear_slot()?;
                            return Err(e);
                        }
                    };
                    return self.run(env, &body, &token, now, takeover).await;
                }
                Admission::Replay {
                    response,
                    expires_at,
                } => return Ok(self.replay(env, &response, waited, expires_at)),
                Admission::Mismatch => {
                    return Ok(with_outcome(
                        http::problem(&ApiError::KeyReused {
                            key: env.key.clone(),
                        }),
                        "mismatch",
                    ))
                }
                Admission::InFlight { lease_expires_at } => {
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
                    // lease expires (its holder may have died: then decide again).
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

    /// Runs the handler under the lease `token` and commits or releases.
    async fn run(
        &self,
        env: &Envelope,
        body: &[u8],
        token: &str,
        started: i64,
        takeover: bool,
    ) -> Result<Response> {
        // The lease alarm releases the lease if this holder dies. A storage write
        // made before the answer holds the answer back (output gate), so it is
        // armed only once the handler has run for LEASE_ALARM_AFTER; a holder that
        // dies sooner is still recovered, by the next request taking over the
        // expired lease. After the answer, the alarm is re-armed for the expiry of
        // the stored answer (see `arm_later` and `sync_record_later`).
        let run = Box::pin(self.run_under_lease(env, body, token, started, takeover));
        let arm = Box::pin(async {
            Delay::from(LEASE_ALARM_AFTER).await;
            set_alarm_logged(&self.state.storage(), started + self.config.lease_ms).await;
        });
        match select(run, arm).await {
            Either::Left((answer, _)) => answer,
            Either::Right((_, run)) => run.await,
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
            match store::find_record(&db, &env.record_id(), started).await {
                Ok(Some(rec)) => return self.adopt(env, rec),
                Ok(None) => {}
                Err(e) => return self.fail(env, token, e),
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
                        Err(e) => return self.fail(env, token, e),
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
            let completed = now_ms();
            let expires_at = completed + self.config.ttl_ms;
            if writes.is_empty()
                && after.is_none()
                && env.test_fail.is_none()
                && self.holds_lease(token)?
            {
                // Write-behind: an answer with no rows of its own (an origin
                // function's, a stored 4xx) is final once it is in this object's
                // SQLite — durable, and the only writer for the key. Its D1 record
                // follows after the answer; the alarm retries it if that fails.
                self.write_completed(env, &env.fingerprint, &response, started, expires_at, false)?;
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
                    if self.holds_lease(token)? {
                        self.write_completed(
                            env,
                            &env.fingerprint,
                            &response,
                            started,
                            expires_at,
                            true,
                        )?;
                        self.arm_later(expires_at);
                    }
                    break (response, expires_at, after);
                }
                Err(e) => {
                    console_error!("D1 batch for {} failed: {e}", env.route);
                    // A live record means another holder committed first: that is the answer.
                    match store::find_record(&db, &env.record_id(), now_ms()).await {
                        Ok(Some(rec)) => return self.adopt(env, rec),
                        Ok(None) if is_conflict(&e) && attempt <= CONFLICT_RETRIES => continue,
                        Ok(None) | Err(_) => return self.fail(env, token, e),
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

    /// Takes a committed D1 record as this key's answer.
    fn adopt(&self, env: &Envelope, rec: store::Record) -> Result<Response> {
        self.write_completed(
            env,
            &rec.fingerprint,
            &rec.response,
            rec.created_at,
            rec.expires_at,
            true,
        )?;
        self.arm_later(rec.expires_at);
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
        if self.holds_lease(token)? {
            self.clear_slot()?;
        }
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

    fn fail(&self, env: &Envelope, token: &str, e: worker::Error) -> Result<Response> {
        console_error!("storage failure for {}: {e}", env.route);
        let problem = ApiError::StorageUnavailable.to_problem();
        let mut resp = http::problem_stored(&ApiError::StorageUnavailable);
        if let Some(s) = problem.retry_after {
            resp.headers.push(("retry-after".into(), s.to_string()));
        }
        self.release_with(env, token, resp)
    }

    /// `GET /v1/idempotency/keys/{key}`: the key's state.
    async fn describe(&self, env: &Envelope) -> Result<Response> {
        let now = now_ms();
        let created_at = self.slot_created_at()?;
        let body = match self.read_slot()? {
            Some(Slot {
                fingerprint,
                state:
                    SlotState::Processing {
                        lease_expires_at, ..
                    },
            }) if lease_expires_at > now => {
                serde_json::json!({
                    "key": env.key, "route": env.route, "state": "processing",
                    "fingerprint": fingerprint, "created_at": created_at,
                    "lease_expires_at": lease_expires_at,
                })
            }
            Some(Slot {
                fingerprint,
                state:
                    SlotState::Completed {
                        response,
                        expires_at,
                    },
            }) if expires_at > now => {
                serde_json::json!({
                    "key": env.key, "route": env.route, "state": "completed",
                    "fingerprint": fingerprint, "created_at": created_at,
                    "response_status": response.status, "expires_at": expires_at,
                })
            }
            _ => {
                let db = self.env.d1(crate::config::DB_BINDING)?;
                match store::find_record(&db, &env.record_id(), now).await? {
                    Some(rec) => serde_json::json!({
                        "key": env.key, "route": env.route, "state": "completed",
                        "fingerprint": rec.fingerprint, "created_at": rec.created_at,
                        "response_status": rec.response.status, "expires_at": rec.expires_at,
                    }),
                    None => {
                        return Ok(http::problem(&ApiError::NotFound(
                            "no live idempotency record for this key and route".into(),
                        )))
                    }
                }
            }
        };
        Ok(http::json(200, &body))
    }

    /// `DELETE /v1/idempotency/keys/{key}`: forget the key so a retry runs again.
    async fn release_key(&self, env: &Envelope) -> Result<Response> {
        let had_slot = self.read_slot()?.is_some();
        self.clear_slot()?;
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
    scope: String,
    route: String,
    key: String,
    record: store::Record,
}

/// Writes the slot's completed answer to D1 if it is not known to be there (the alarm's path).
async fn sync_record(sql: &SqlStorage, env: &Env) -> Result<()> {
    #[derive(Deserialize)]
    struct Row {
        scope: String,
        route: String,
        key: String,
        fingerprint: String,
        response_status: f64,
        response_headers: String,
        response_body: String,
        created_at: f64,
        expires_at: f64,
    }
    let rows: Vec<Row> = sql
        .exec(
            "SELECT scope, route, key, fingerprint, response_status, response_headers, response_body, created_at, \
             expires_at FROM slot WHERE id = 1 AND state = 'completed' AND d1_synced = 0 AND scope IS NOT NULL",
            None,
        )?
        .to_array()?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(());
    };
    let unsynced = Unsynced {
        record: store::Record {
            response: store::decode_response(
                r.response_status,
                &r.response_headers,
                &r.response_body,
            )?,
            fingerprint: r.fingerprint,
            created_at: r.created_at as i64,
            expires_at: r.expires_at as i64,
        },
        scope: r.scope,
        route: r.route,
        key: r.key,
    };
    write_record(sql, env, &unsynced).await
}

/// Upserts a completed answer's D1 record, then takes it back if the key was
/// released while it was on its way.
async fn write_record(sql: &SqlStorage, env: &Env, u: &Unsynced) -> Result<()> {
    let db = env.d1(crate::config::DB_BINDING)?;
    let id = RecordId {
        scope: &u.scope,
        route: &u.route,
        key: &u.key,
    };
    let r = &u.record;
    store::record_upsert(
        &db,
        &id,
        &r.fingerprint,
        &r.response,
        r.created_at,
        r.expires_at,
    )?
    .run()
    .await?;
    // If the key was released while this write was on its way, the release
    // deleted D1's record before this one landed: take this one back (only this
    // one: a newer answer for the key has another expiry).
    #[derive(Deserialize)]
    struct Count {
        n: f64,
    }
    let still_there = sql
        .exec(
            "SELECT COUNT(*) AS n FROM slot WHERE id = 1 AND state = 'completed' AND expires_at = ?",
            vec![num(r.expires_at)],
        )?
        .to_array::<Count>()?
        .first()
        .is_some_and(|c| c.n > 0.0);
    if !still_there {
        store::stmt(
            &db,
            "DELETE FROM idempotency_records WHERE scope = ?1 AND route = ?2 AND key = ?3 AND expires_at = ?4",
            &[store::s(id.scope), store::s(id.route), store::s(id.key), store::int(r.expires_at)],
        )?
        .run()
        .await?;
    }
    // The slot keeps d1_synced = 0: marking it would be one more storage write
    // per execution, and a later alarm re-running this upsert is harmless.
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
