//! CBOR: the payload format inside bare messages and the message format of the `cbor` encoding.

mod decode;
mod encode;
mod outgoing;

pub(crate) use decode::{decode, decode_shared, MAX_DEPTH};
pub(crate) use encode::encode;
pub(crate) use outgoing::{
    outgoing_array_len, outgoing_len, write_outgoing, write_outgoing_array, write_outgoing_owned, Parts,
};
