//! `RecordMirror`: a few long-lived Durable Objects (`mirror-0` ..
//! `mirror-{RECORD_MIRRORS - 1}`, a key hashed to one) that carry the records of
//! answers without rows of their own — origin functions, stored 4xx — to D1 in
//! batches. The decisions are plain code in [`crate::idempotency::mirror`] over
//! the object's SQLite ([`SqlMirrorLog`]) and D1 ([`D1Mirror`]); this file runs
//! them, and [`MirroredRecords`] is the key object's side: the `Records` whose
//! write-behind goes through the key's mirror.
//!
//! Why objects and not Cloudflare Queues: a record must be durable before the
//! key's object may stop re-sending it. A mirror acknowledges once the record
//! is in its SQLite (the answer waits for the commit, as every object's does);
//! a queue's `send` is durable on Cloudflare but not under `wrangler dev`
//! (miniflare keeps local queue messages in memory: a kill loses them), and a
//! consumer cannot tell the key's object its record landed. See
//! `docs/architecture.md`, "Records in batches: the record mirrors".

use crate::clock::WallClock;
use crate::config::{RECORD_MIRRORS, RECORD_MIRROR_BINDING};
use crate::idempotency::execute::{CommitError, NewRecord, Records};
use crate::idempotency::gate::{Committed, RecordKey};
use crate::idempotency::mirror::{
    mirror_of, mirrored, Arrivals, Due, Mirror, MirrorEntry, MirrorLog,
};
use crate::mirror_sql::SqlMirrorLog;
use crate::store::{D1Mirror, D1Records};
use futures_util::lock::Mutex;
use js_sys::futures::JsFuture;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{
    console_error, durable_object, js_sys, wasm_bindgen, DurableObject, Env, Method, Request,
    Response, Result, State, Stub,
};

#[durable_object]
pub struct RecordMirror {
    state: State,
    env: Env,
    log: SqlMirrorLog,
    /// Serializes this mirror's D1 writes (flushes and deletes).
    lock: Mutex<()>,
    /// The alarm this instance set, if any (a new instance knows none: its first
    /// record sets one; one left by the previous instance fires anyway).
    armed: Cell<Option<i64>>,
    arrivals: Cell<Arrivals>,
}

/// `POST /forget`: a key's record to forget (only the one expiring at
/// `expires_at`, if given).
#[derive(Serialize, Deserialize)]
struct Forget {
    scope: String,
    route: String,
    key: String,
    expires_at: Option<i64>,
}

/// The body of `POST /accept`: a list, or (from a key object of the build
/// before, during a deploy) one record.
#[derive(Deserialize)]
#[serde(untagged)]
enum Entries {
    Many(Vec<MirrorEntry>),
    One(MirrorEntry),
}

#[derive(Serialize, Deserialize, Default)]
pub struct MirrorStats {
    /// Records waiting for D1.
    pub waiting: u64,
    /// D1 statements issued so far.
    pub statements: u64,
}

fn at(ms: i64) -> worker::ScheduledTime {
    worker::ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(ms as f64)))
}

fn rust_err(e: impl std::fmt::Display) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

impl DurableObject for RecordMirror {
    fn new(state: State, env: Env) -> Self {
        crate::panic_guard::install();
        let log = SqlMirrorLog::new(state.storage().sql()).unwrap_or_else(|e| {
            // The next call fails the same way and answers 500: the key's object
            // keeps its record and retries.
            console_error!("RecordMirror: creating its tables failed: {e}");
            SqlMirrorLog::unchecked(state.storage().sql())
        });
        RecordMirror {
            state,
            env,
            log,
            lock: Mutex::new(()),
            armed: Cell::new(None),
            arrivals: Cell::new(Arrivals::default()),
        }
    }

    /// The `fetch` form of a call (a key object of an older version's, during
    /// a gradual deployment): the operation by method and path. Today's key
    /// objects call [`RecordMirror::call_rpc`].
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let body = match req.method() {
            Method::Post => req.bytes().await?,
            _ => Vec::new(),
        };
        let (status, answer) = self
            .serve(req.method(), req.path().trim_start_matches('/'), &body)
            .await?;
        Ok(Response::ok(answer)?.with_status(status))
    }

    async fn alarm(&self) -> Result<Response> {
        self.armed.set(None);
        let mirror = self.mirror();
        let next = match mirror.due().map_err(rust_err)? {
            None => None,
            Some(Due::At(t)) => Some(t),
            Some(Due::Now) => {
                let db = self.env.d1(crate::config::DB_BINDING)?;
                let done = mirror.flush(&D1Mirror { db: &db }).await;
                if let Some(e) = &done.error {
                    console_error!("RecordMirror: flush failed ({e}); retried");
                }
                done.next
            }
        };
        if let Some(next) = next {
            // A record that came during the flush may have armed it sooner.
            if self.armed.get().is_none_or(|a| a > next) {
                self.state.storage().set_alarm(at(next)).await?;
                self.armed.set(Some(next));
            }
        }
        Response::ok("ok")
    }
}

/// A key object's call by RPC, through the `RecordMirror` class of
/// `src/entry.js`: the operation's method and name, and its JSON body.
/// Resolves to the answer's body; rejects naming the status otherwise.
#[wasm_bindgen]
impl RecordMirror {
    #[wasm_bindgen(js_name = call)]
    pub async fn call_rpc(
        &self,
        method: String,
        op: String,
        body: Option<String>,
    ) -> std::result::Result<String, JsValue> {
        let method = Method::from(method);
        let body = body.unwrap_or_default();
        match self.serve(method, &op, body.as_bytes()).await {
            Ok((200, answer)) => Ok(answer),
            Ok((status, answer)) => Err(JsValue::from_str(&format!("{status} {answer}"))),
            Err(e) => Err(JsValue::from_str(&format!("500 {e}"))),
        }
    }
}

impl RecordMirror {
    /// One call, however it came: its status and body.
    async fn serve(&self, method: Method, op: &str, body: &[u8]) -> Result<(u16, String)> {
        // A panic resets the object: the caller's hand-over fails and is retried.
        let _in_flight = crate::panic_guard::InFlight::enter(&self.state);
        let mirror = self.mirror();
        match (method, op) {
            (Method::Post, "accept") => {
                // Records of one or more keys (a gate object's batch).
                let entries = match serde_json::from_slice::<Entries>(body).map_err(rust_err)? {
                    Entries::Many(list) => list,
                    Entries::One(entry) => vec![entry],
                };
                let due = mirror
                    .accept_all(&entries, self.armed.get())
                    .map_err(rust_err)?;
                if let Some(due) = due {
                    // No await between the writes and this call: all commit together.
                    self.state.storage().set_alarm(at(due)).await?;
                    self.armed.set(Some(due));
                }
                Ok((200, "accepted".into()))
            }
            (Method::Post, "forget") => {
                let f: Forget = serde_json::from_slice(body).map_err(rust_err)?;
                let key = RecordKey {
                    scope: f.scope,
                    route: f.route,
                    key: f.key,
                };
                let db = self.env.d1(crate::config::DB_BINDING)?;
                let existed = mirror
                    .forget(&D1Mirror { db: &db }, &key, f.expires_at)
                    .await
                    .map_err(worker::Error::RustError)?;
                Ok((200, serde_json::json!({ "existed": existed }).to_string()))
            }
            (Method::Get, "stats") => Ok((
                200,
                serde_json::to_string(&MirrorStats {
                    waiting: self.log.count().map_err(rust_err)? as u64,
                    statements: self.log.statements().map_err(rust_err)?,
                })
                .map_err(rust_err)?,
            )),
            _ => Ok((404, "no such mirror route".into())),
        }
    }

    fn mirror(&self) -> Mirror<'_, &SqlMirrorLog, WallClock> {
        Mirror {
            log: &self.log,
            clock: WallClock,
            lock: &self.lock,
            arrivals: &self.arrivals,
        }
    }
}

fn stub(env: &Env, shard: u32) -> Result<Stub> {
    env.durable_object(RECORD_MIRROR_BINDING)?
        .id_from_name(&format!("mirror-{shard}"))?
        .get_stub()
}

#[wasm_bindgen]
extern "C" {
    /// A `RecordMirror` stub, as the runtime hands it out: its methods are RPC calls.
    type MirrorStub;

    /// Returns a thenable (the runtime's RPC promise), not a `Promise`.
    #[wasm_bindgen(method, catch)]
    fn call(
        this: &MirrorStub,
        method: &str,
        op: &str,
        body: Option<String>,
    ) -> std::result::Result<JsValue, JsValue>;
}

/// One call to a mirror, by RPC (as the Worker's calls to the key objects):
/// its answer's body, or an error naming the mirror if it did not answer 200.
async fn call(
    env: &Env,
    shard: u32,
    method: Method,
    op: &str,
    body: Option<String>,
) -> Result<Vec<u8>> {
    let failed = |e: JsValue| {
        let why = e
            .as_string()
            .or_else(|| {
                e.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
            })
            .unwrap_or_else(|| format!("{e:?}"));
        worker::Error::RustError(format!("record mirror {shard} /{op}: {why}"))
    };
    let pending = stub(env, shard)?
        .into_rpc::<MirrorStub>()
        .call(method.as_ref(), op, body)
        .map_err(failed)?;
    let answer = JsFuture::from(js_sys::Promise::resolve(&pending))
        .await
        .map_err(failed)?;
    Ok(answer.as_string().unwrap_or_default().into_bytes())
}

/// Hands records to their keys' mirrors, one call per mirror; `Ok` once all
/// are durable there.
pub async fn accept<'a>(
    env: &Env,
    records: impl IntoIterator<Item = (&'a RecordKey, &'a Committed)>,
) -> Result<()> {
    let mut by_mirror: Vec<Vec<MirrorEntry>> = (0..RECORD_MIRRORS).map(|_| Vec::new()).collect();
    for (key, record) in records {
        by_mirror[mirror_of(key, RECORD_MIRRORS) as usize].push(MirrorEntry::new(key, record));
    }
    for (shard, entries) in by_mirror.iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        let body = serde_json::to_string(entries).map_err(rust_err)?;
        call(env, shard as u32, Method::Post, "accept", Some(body)).await?;
    }
    Ok(())
}

/// Forgets a key's record in its mirror and in D1 (see `Mirror::forget`).
pub async fn forget(env: &Env, key: &RecordKey, expires_at: Option<i64>) -> Result<bool> {
    let body = serde_json::to_string(&Forget {
        scope: key.scope.clone(),
        route: key.route.clone(),
        key: key.key.clone(),
        expires_at,
    })
    .map_err(rust_err)?;
    #[derive(Deserialize)]
    struct Existed {
        existed: bool,
    }
    let answer = call(
        env,
        mirror_of(key, RECORD_MIRRORS),
        Method::Post,
        "forget",
        Some(body),
    )
    .await?;
    Ok(serde_json::from_slice::<Existed>(&answer)
        .map_err(rust_err)?
        .existed)
}

/// Every mirror's figures, summed (the test hook's `GET /__test/mirrors`).
pub async fn stats(env: &Env) -> Result<MirrorStats> {
    let mut total = MirrorStats::default();
    for shard in 0..RECORD_MIRRORS {
        let s: MirrorStats =
            serde_json::from_slice(&call(env, shard, Method::Get, "stats", None).await?)
                .map_err(rust_err)?;
        total.waiting += s.waiting;
        total.statements += s.statements;
    }
    Ok(total)
}

/// D1 as the key object's `Records`, its write-behind through the key's mirror:
/// the upsert of a small record is a hand-over to the mirror (one object hop,
/// no D1 statement); a big one (see [`mirrored`]) is written to D1 directly, as
/// before. Deletes go through the mirror, so none can miss a waiting record.
pub struct MirroredRecords<'a> {
    pub d1: D1Records<'a>,
    pub env: &'a Env,
}

impl Records for MirroredRecords<'_> {
    type Writes = Vec<worker::D1PreparedStatement>;
    type Error = worker::Error;

    fn is_empty(writes: &Self::Writes) -> bool {
        writes.is_empty()
    }

    async fn find(&self, key: &RecordKey, now: i64) -> Result<Option<Committed>> {
        self.d1.find(key, now).await
    }

    async fn commit(
        &self,
        writes: Self::Writes,
        record: Option<NewRecord<'_>>,
    ) -> std::result::Result<(), CommitError<worker::Error>> {
        self.d1.commit(writes, record).await
    }

    async fn upsert(&self, key: &RecordKey, record: &Committed) -> Result<()> {
        if mirrored(record.response.body.len()) {
            accept(self.env, [(key, record)]).await
        } else {
            self.d1.upsert(key, record).await
        }
    }

    async fn upsert_many(&self, records: &[(RecordKey, Committed)]) -> Result<()> {
        let (small, big): (Vec<_>, Vec<_>) = records
            .iter()
            .partition(|(_, r)| mirrored(r.response.body.len()));
        for (key, record) in big {
            self.d1.upsert(key, record).await?;
        }
        accept(self.env, small.into_iter().map(|(k, r)| (k, r))).await
    }

    async fn take_back(&self, key: &RecordKey, expires_at: i64) -> Result<()> {
        forget(self.env, key, Some(expires_at)).await.map(|_| ())
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool> {
        forget(self.env, key, None).await
    }
}
