//! Shared vocabulary of every aibank crate: money, ids, time, the error envelope and the
//! request extractors that turn bad input into that envelope.

pub mod clock;
pub mod error;
pub mod extract;
pub mod ids;
pub mod money;
pub mod page;
pub mod secret;
pub mod secretbox;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{ApiError, ErrorCode};
pub use extract::{Json, Query};
pub use money::Usd;
pub use page::{Page, PageQuery};
pub use secret::SecretString;
pub use secretbox::SecretBox;
