//! The client API: one module per endpoint, plus the shared body reader and error answers.

pub mod admin;
mod body;
mod checks;
mod error;
mod register;
mod side_door;
mod verify;

pub use body::MAX_BODY_BYTES;
pub use error::ApiError;
pub use register::register;
pub use side_door::{unknown_endpoint, unrouted};
pub use verify::verify;
