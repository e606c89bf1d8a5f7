//! The client API: one module per endpoint, plus the shared body reader and error answers.

pub mod admin;
mod body;
mod checks;
mod error;
mod register;
mod verify;

pub use body::MAX_BODY_BYTES;
pub use error::ApiError;
pub use register::register;
pub use verify::verify;
