//! Everything that speaks to BILLmanager: [`client`] (HTTP), [`xml`] (pure parsing),
//! [`error`] (typed failures) and [`dialect`] (the seam between API generations).

pub mod client;
pub mod dialect;
pub mod error;
pub mod redact;
pub mod xml;

pub use client::{Client, IpCheck, LicenseSink, Listing, Renewed, Rows};
pub use error::{ApiError, Certainty, Error, ErrorKind};
