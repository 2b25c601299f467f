//! The pure logic of the `webhooks` extension: everything that decides what is sent, how it is
//! signed, when it is retried and who may send when, without PostgreSQL. The extension's crate
//! re-exports these modules under their own names (`webhooks::signing`, ...), and they are
//! tested here with plain `cargo test -p webhooks-core`, in seconds.

pub mod answer;
pub mod dispatch;
pub mod envelope;
pub mod filter;
pub mod filter_path;
pub mod headers;
pub mod ids;
pub mod lease;
pub mod schedule;
pub mod sealing;
pub mod signing;
pub mod state;
pub mod target;
pub mod tls;
