//! `KeyGate`: the Durable Object that serializes every request for a key (one
//! `(scope, route, key)`). It owns one key, or — with `KEYGATE_SHARDS` = N — the
//! tenant's keys that hash to it, each in its own slot with its own lease,
//! waiters and alarm time ([`crate::idempotency::shard`]).
//!
//! Its decisions are plain code in [`crate::idempotency::gate`] (per key) and
//! [`crate::idempotency::shard`] (the object's alarm) over the object's SQLite
//! ([`SqlSlots`]); this file runs them: it reads the body, runs the handler under
//! the lease (renewing it while the handler lives), commits to D1, answers the
//! requests waiting on the key, and handles the alarm. D1's
//! `idempotency_records` stays the system of record; the handler's rows and that
//! record are committed in one D1 batch.

mod admin;
mod alarms;
mod answers;
mod run;

use crate::clock::WallClock;
use crate::commands::Endpoint;
use crate::config::{Config, ConfigErrors};
use crate::envelope::{Envelope, GateCall, GateOutcome, ENVELOPE_HEADER};
use crate::http;
use crate::idempotency::copies::Lent;
use crate::idempotency::execute::Executed;
use crate::idempotency::gate::{may_vacate_at, Clock, Decision, Gate, LiveHolders, StoreError};
use crate::idempotency::memo::{MemoSlot, MemoTable};
use crate::idempotency::shard::Shard;
use crate::idempotency::waiting::{self, Wait};
use crate::idempotency::StoredResponse;
use crate::mirror_do::MirroredRecords;
use crate::problem::ApiError;
use crate::slot_sql::{SqlSlot, SqlSlots};
use alarms::{at, SYNC_RETRY_MS};
use answers::{Finished, ForWaiters};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use worker::{
    console_error, durable_object, wasm_bindgen, Delay, DurableObject, Env, Request, Response,
    Result, State,
};

#[durable_object]
pub struct KeyGate {
    state: State,
    env: Env,
    slots: Slots,
    config: Config,
    /// Settings that do not parse: the object refuses requests (the Worker
    /// already does); its alarm still settles what earlier requests left.
    config_error: Option<ConfigErrors>,
    /// The requests waiting on each key's run, by key name.
    waiters: RefCell<HashMap<String, Vec<oneshot::Sender<Finished>>>>,
    /// Lease tokens of the handlers running in this instance: their leases are
    /// never taken over (see `Gate::admit_with`).
    live: LiveHolders,
    /// The object's alarm as this instance last set it (see `alarms::arm`).
    alarm_at: AlarmAt,
    /// The copies of replays it lent to Worker isolates (see `Lent`).
    lent: RefCell<Lent>,
}

/// The object's slots: its SQLite table, and its memory of the slots it read
/// or wrote (so that a replay does not read SQLite).
type Slots = MemoTable<SqlSlots>;

/// Slots remembered at most, and the largest answer body remembered.
const MEMO_SLOTS: usize = 256;
const MEMO_BODY_BYTES: usize = 64 * 1024;

/// `None` until this instance sets the alarm or sees it fire.
type AlarmAt = Rc<Cell<Option<Option<i64>>>>;

/// The keys' decisions over this object's SQLite and the runtime's clock.
fn shard_over(slots: &Slots, lease_ms: i64, max_answer_bytes: usize) -> Shard<&Slots, WallClock> {
    Shard {
        table: slots,
        clock: WallClock,
        lease_ms,
        max_answer_bytes,
    }
}

fn now_ms() -> i64 {
    WallClock.now_ms()
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
        let slots = MemoTable::new(SqlSlots::new(sql), MEMO_SLOTS, MEMO_BODY_BYTES);
        // A new object instance means no request of the previous one still runs:
        // its isolate died, or its wasm instance did (after a Rust panic the shim
        // re-creates the instance and re-constructs every object). A lease in
        // storage is a dead holder's: expire it, so the next request takes over
        // at once (adopting an answer that holder committed to D1) instead of
        // answering 409 until the lease runs out.
        if let Err(e) = shard_over(&slots, 0, usize::MAX).expire_dead_holders() {
            console_error!("KeyGate: expiring dead holders' leases failed: {e}");
        }
        crate::panic_guard::install();
        let (config, config_error) = match crate::config::cached(
            |n| env.var(n).ok().map(|v| v.to_string()),
            &Endpoint::ALL.map(Endpoint::template),
        ) {
            Ok(c) => (Config::clone(&c), None),
            Err(e) => {
                console_error!("KeyGate: configuration refused: {e}");
                (Config::default(), Some(e))
            }
        };
        let lent = RefCell::new(Lent::new(config.replay_cache_ms, now_ms()));
        KeyGate {
            state,
            env,
            slots,
            config,
            config_error,
            waiters: RefCell::new(HashMap::new()),
            live: LiveHolders::default(),
            alarm_at: Rc::new(Cell::new(None)),
            lent,
        }
    }

    /// The `fetch` form of the Worker's call (an older Worker version's, during
    /// a gradual deployment): the call by method and path, the envelope in a
    /// header. Today's Worker calls [`KeyGate::serve_rpc`].
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let _in_flight = crate::panic_guard::InFlight::enter(&self.state);
        let call = GateCall::from_http(req.method().as_ref(), &req.path());
        let envelope = req.headers().get(ENVELOPE_HEADER)?;
        let body = match call {
            Some(GateCall::Execute) => req.bytes().await?,
            _ => Vec::new(),
        };
        Ok(http::reply(
            self.serve(call, envelope.as_deref(), &body).await?,
        ))
    }

    async fn alarm(&self) -> Result<Response> {
        let db = self.env.d1(crate::config::DB_BINDING)?;
        let records = MirroredRecords {
            d1: self.records(&db),
            env: &self.env,
        };
        // The alarm that fired is spent: whatever is due next is set anew.
        self.alarm_at.set(Some(None));
        let done = self
            .shard()
            .on_alarm(&records, |t| self.live.contains(t), SYNC_RETRY_MS)
            .await;
        if let Some(e) = &done.error {
            console_error!("KeyGate alarm: {e} (retried)");
        }
        match done.next {
            Some(t) => {
                self.alarm_at.set(Some(Some(t)));
                self.state.storage().set_alarm(at(t)).await?
            }
            // The answers expired, or dead holders left nothing: drop the database.
            None if done.error.is_none() => self.vacate_if_empty().await,
            None => {}
        }
        Response::ok("ok")
    }
}

/// The Worker's call by RPC, through the `KeyGate` class of `src/entry.js`
/// (`object_rpc`): `call` by name, the encoded envelope, and the command as
/// `body` for an execute.
#[wasm_bindgen]
impl KeyGate {
    #[wasm_bindgen(js_name = serve)]
    pub async fn serve_rpc(
        &self,
        call: String,
        envelope: String,
        body: Option<Vec<u8>>,
        form: Option<String>,
    ) -> std::result::Result<JsValue, JsValue> {
        std::panic::AssertUnwindSafe(async move {
            let _in_flight = crate::panic_guard::InFlight::enter(&self.state);
            let body = body.unwrap_or_default();
            let answer = self
                .serve(GateCall::parse(&call), Some(&envelope), &body)
                .await?;
            crate::object_rpc::to_wire(answer, form.as_deref())
        })
        .await
        .map_err(JsValue::from)
    }
}

impl KeyGate {
    /// One call from the Worker, however it came: the envelope decoded, then
    /// execute, state or release.
    async fn serve(
        &self,
        call: Option<GateCall>,
        envelope: Option<&str>,
        body: &[u8],
    ) -> Result<StoredResponse> {
        let envelope: Envelope = match envelope {
            Some(raw) => {
                serde_json::from_str(raw).map_err(|e| worker::Error::RustError(e.to_string()))?
            }
            None => {
                return Ok(http::problem_reply(&ApiError::bad_request(
                    "internal-protocol",
                    "missing envelope",
                )))
            }
        };
        if let Some(e) = &self.config_error {
            return Ok(http::problem_reply(&ApiError::Misconfigured {
                vars: e.vars().into_iter().map(String::from).collect(),
            }));
        }
        let result = match call {
            Some(GateCall::Execute) => self.execute(body, &envelope).await,
            Some(GateCall::State) => self.describe(&envelope).await,
            Some(GateCall::Release) => self.release_key(&envelope).await,
            None => Ok(http::problem_reply(&ApiError::NotFound(
                "no such object route".into(),
            ))),
        };
        result.or_else(|e| {
            console_error!("KeyGate {}: {e}", envelope.route);
            Ok(answers::with_outcome(
                http::problem_reply(&ApiError::StorageUnavailable),
                GateOutcome::Failed,
            ))
        })
    }

    fn shard(&self) -> Shard<&Slots, WallClock> {
        shard_over(
            &self.slots,
            self.config.lease_ms,
            self.config.max_answer_bytes,
        )
    }

    /// The decisions of the key named `name`.
    fn gate(&self, name: &str) -> Gate<MemoSlot<SqlSlot>, WallClock> {
        self.shard().gate(name)
    }

    fn notify(&self, name: &str, finished: &Finished) {
        for tx in self.waiters.borrow_mut().remove(name).unwrap_or_default() {
            let _ = tx.send(finished.clone());
        }
    }

    /// Whether a request of this instance waits on any key.
    fn waiting(&self) -> bool {
        self.waiters
            .borrow()
            .values()
            .flatten()
            .any(|tx| !tx.is_canceled())
    }

    async fn execute(&self, body: &[u8], env: &Envelope) -> Result<StoredResponse> {
        if env.fingerprint.is_none() {
            return Ok(http::problem_reply(&ApiError::bad_request(
                "internal-protocol",
                "an execute envelope carries the request's fingerprint",
            )));
        }
        let wait_deadline = now_ms() + env.wait_ms;
        let mut waited = false;
        let name = env.record_key().name();
        loop {
            // Atomic: read, decide, write the lease — `admit_with` never awaits.
            let decision = self
                .gate(&name)
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
                    fence,
                } => {
                    let env = &Envelope {
                        fence: Some(fence),
                        ..env.clone()
                    };
                    let answer = {
                        // Known live until it has answered, however it ends.
                        let _live = self.live.enter(&token);
                        self.run(env, &name, body, &token, now, takeover).await
                    };
                    let (answer, kept) = answer;
                    // Released (a 5xx, a throw): nothing stays behind. A stored
                    // or adopted answer is a slot, so there is nothing to look at.
                    if !kept {
                        self.vacate_if_empty().await;
                    }
                    return Ok(answer);
                }
                Decision::Replay {
                    response,
                    expires_at,
                } => {
                    // Test hook: the replay, decided now, reaches the Worker
                    // this much later (a slow hop back), so that a release of
                    // the key can run meanwhile (tests/e2e/test_coherence.py).
                    if env.test_delay_ms > 0 {
                        Delay::from(Duration::from_millis(env.test_delay_ms)).await;
                    }
                    let mut answer = answers::replay(env, response, waited, expires_at);
                    // A copy for the asking Worker's isolate, of the answer
                    // any request with this payload gets (one that waited
                    // also names its preference).
                    if env.copy && !waited {
                        if let Some(ms) = self.lent.borrow_mut().lend(&name, now_ms(), expires_at) {
                            answer
                                .headers
                                .push((http::COPY_HEADER.into(), ms.to_string()));
                        }
                    }
                    return Ok(answer);
                }
                Decision::Mismatch => {
                    return Ok(answers::with_outcome(
                        http::problem_reply(&ApiError::KeyReused {
                            key: env.key.to_string(),
                        }),
                        GateOutcome::Mismatch,
                    ))
                }
                Decision::InFlight { lease_expires_at } => {
                    let wake = match waiting::in_flight(now_ms(), wait_deadline, lease_expires_at) {
                        Wait::Conflict => {
                            return Ok(answers::with_outcome(
                                http::problem_reply(&ApiError::KeyInFlight {
                                    key: env.key.to_string(),
                                }),
                                GateOutcome::Conflict,
                            ))
                        }
                        Wait::For(ms) => ms,
                    };
                    waited = true;
                    let (tx, rx) = oneshot::channel();
                    self.waiters
                        .borrow_mut()
                        .entry(name.clone())
                        .or_default()
                        .push(tx);
                    // Wake at the first answer, or as `waiting::in_flight` says.
                    let timer = Delay::from(Duration::from_millis(wake as u64));
                    if let Either::Left((Ok(finished), _)) = select(rx, timer).await {
                        return Ok(answers::to_waiter(env, finished));
                    }
                }
            }
        }
    }

    /// The answer to the request that ran; its waiters get theirs.
    fn answer_run<A>(&self, env: &Envelope, name: &str, executed: Executed<A>) -> StoredResponse {
        let (response, waiters) = answers::of_run(env, executed);
        match waiters {
            ForWaiters::Send(finished) => self.notify(name, &finished),
            // They sent the payload that lost: they re-decide and get 422 too.
            ForWaiters::Redecide => {
                self.waiters.borrow_mut().remove(name);
            }
        }
        response
    }

    /// Drops the object's whole database (`deleteAll`, which also clears the
    /// alarm) once it holds no slot and no request of this instance runs or
    /// waits: Cloudflare keeps an object's SQLite database, ~12 KB at least, until
    /// then, so without this every key ever used would cost storage forever.
    /// The check and the `deleteAll` call happen in one turn (the future is
    /// polled at once): no request can write a lease in between. The database
    /// holds the last fence issued: it is dropped only once the clock alone puts
    /// the next fence above it (`gate::may_vacate_at`); until then the alarm
    /// is set for that time, which tries again.
    async fn vacate_if_empty(&self) {
        if self.waiting() || !self.live.is_empty() {
            return;
        }
        match self.shard().is_empty() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                console_error!("KeyGate: reading the slot before vacating failed: {e}");
                return;
            }
        }
        let hold_until = match self.slots.table().last_fence() {
            Ok(last) => may_vacate_at(last),
            Err(e) => {
                console_error!("KeyGate: reading the last fence before vacating failed: {e}");
                return;
            }
        };
        if now_ms() < hold_until {
            if self.alarm_at.get() != Some(Some(hold_until)) {
                self.alarm_at.set(Some(Some(hold_until)));
                alarms::set_alarm_logged(&self.state.storage(), hold_until).await;
            }
            return;
        }
        self.slots.table().forget();
        self.slots.forget_all();
        self.alarm_at.set(Some(None));
        if let Err(e) = self.state.storage().delete_all().await {
            console_error!("KeyGate: deleteAll failed: {e}");
        }
    }
}
