//! The export staging workflow (`docs/staging.md`) as plain logic: export data and
//! its validation and quality score, the state machine, the approval diff, file
//! rendering, and request parsing. No `worker::` import here.

pub mod check;
pub mod data;
pub mod diff;
pub mod queue;
pub mod render;
pub mod requests;
pub mod workflow;
