//! The runtime's clock, for the objects' plain logic (`idempotency::gate::Clock`,
//! which tests replace with a fake one).

use crate::idempotency::gate::Clock;

#[derive(Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> i64 {
        worker::Date::now().as_millis() as i64
    }
}
