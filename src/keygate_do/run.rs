//! The key object's run of a handler under a lease: the lease kept while it
//! runs, the commit or release, the alarm for what the answer leaves to do.

use super::alarms::HAND_OVER_AFTER_MS;
use super::{now_ms, too_large, KeyGate};
use crate::envelope::Envelope;
use crate::http::{self, Timings, TAKEOVER_HEADER};
use crate::idempotency::execute::{Executed, Held};
use crate::idempotency::StoredResponse;
use crate::routes::{self, AfterCommit};
use crate::store::D1Records;
use futures_util::future::{select, Either};
use std::time::Duration;
use worker::Delay;

impl KeyGate {
    /// Runs the handler under the lease `token` (renewed while it runs), commits
    /// or releases (`idempotency::execute`), and answers this request and the
    /// ones waiting on the key — with whether the key's slot holds an answer
    /// now. Never leaves the lease held on a failure.
    pub(super) async fn run(
        &self,
        env: &Envelope,
        name: &str,
        body: &[u8],
        token: &str,
        started: i64,
        takeover: bool,
    ) -> (StoredResponse, bool) {
        let db = match self.env.d1(crate::config::DB_BINDING) {
            Ok(db) => db,
            Err(e) => {
                let failed = Executed::<AfterCommit>::Failed(e.to_string());
                return (self.answer_run(env, name, failed), false);
            }
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
        let gate = self.gate(name);
        let run = Box::pin(gate.run_held(&held, &records, handler, too_large));
        let keep = Box::pin(self.keep_lease(name, token, started + self.config.lease_ms));
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
            } if self.config.keygate_shards > 0 => {
                // A long-lived gate object hands its records over in batches,
                // from its alarm: the slot (durable, unsynced) is the record
                // until then, and its due time commits with the answer.
                self.state
                    .wait_until(self.arm(name, now_ms() + HAND_OVER_AFTER_MS));
            }
            Executed::Stored {
                response,
                expires_at,
                write_behind: true,
                ..
            } => self.sync_record_later(env, name, response, started, *expires_at),
            Executed::Stored { expires_at, .. } => self.arm_later(name, *expires_at),
            Executed::Adopted(c) => self.arm_later(name, c.expires_at),
            _ => {}
        }
        if let Executed::Stored { after, .. } = &mut executed {
            if let Some(after) = after.take() {
                // Side effects that need the committed rows (e.g. dispatching a
                // job). They run once: a replay never reaches this point.
                routes::after_commit(&db, &self.config, after).await;
            }
        }
        let kept = matches!(executed, Executed::Stored { .. } | Executed::Adopted(_));
        let mut answer = self.answer_run(env, name, executed);
        timings.apply_to(&mut answer.headers);
        if takeover {
            http::set_header(&mut answer.headers, TAKEOVER_HEADER, "1");
        }
        (answer, kept)
    }
}
