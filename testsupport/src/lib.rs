//! placeholder
pub mod apiserver;
pub mod sshd;
