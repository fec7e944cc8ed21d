//! CBOR: the payload format inside bare messages and the message format of the `cbor` encoding.

mod decode;
mod encode;

pub(crate) use decode::{decode, MAX_DEPTH};
pub(crate) use encode::encode;
