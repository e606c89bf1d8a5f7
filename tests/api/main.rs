//! The client API over real HTTP: the gate on port 0 with a temporary SQLite file, in front of
//! the signal-server and hCaptcha emulators.

mod abuse;
mod alerts;
mod demo;
mod helpers;
mod operations;
mod process;
mod register;
mod reliability;
mod verify;
mod websocket;
