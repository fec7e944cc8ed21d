//! Agent sessions (ACP): [`acp`] is the client connection to one agent process.

pub mod acp;
