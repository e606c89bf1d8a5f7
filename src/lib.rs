//! signal-gate: the registration gate in front of a self-hosted signal-server.
//!
//! Layout:
//! - [`startup`] wires everything and owns the route tables; [`configuration`] reads settings;
//!   [`connection`] makes the HTTP parser's own answers JSON.
//! - [`routes`] holds the client API, one module per endpoint, each a pipeline of named steps.
//! - [`domain`] holds the validated types that untrusted input is parsed into at the edge.
//! - [`limits`] (in-memory budgets) and [`storage`] (persisted per-number state) sit behind
//!   narrow traits, so a shared store can replace either.
//! - [`captcha`] talks to hCaptcha and [`upstream`] to signal-server.
//! - [`decision`] names every outcome's reason code, used in logs, metrics and docs alike.
//! - [`emulators`] are stand-ins for signal-server and hCaptcha, for tests and the demo only;
//!   `serve` never uses them.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod admin;
pub mod alerts;
pub mod captcha;
pub mod clock;
pub mod configuration;
pub mod connection;
pub mod decision;
pub mod demo;
pub mod domain;
pub mod emulators;
pub mod gate;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod upstream;
pub mod websocket;
