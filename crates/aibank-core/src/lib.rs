//! Shared vocabulary of every aibank crate: money, ids, time and the error envelope. It
//! knows no web framework; with the `actix` feature it also answers actix-web requests with
//! the envelope and provides the extractors that turn bad input into it.

pub mod clock;
pub mod error;
#[cfg(feature = "actix")]
pub mod extract;
pub mod ids;
pub mod money;
pub mod page;
pub mod secret;
pub mod secretbox;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{ApiError, ErrorCode};
#[cfg(feature = "actix")]
pub use extract::{Json, Query};
pub use money::Usd;
pub use page::{Page, PageQuery};
pub use secret::SecretString;
pub use secretbox::SecretBox;
