//! The test kit's own tests: the mocks answer in the providers' wire formats, and the anvil
//! helper and its contracts behave like the real chain's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anvil;
mod mock_upstream;
