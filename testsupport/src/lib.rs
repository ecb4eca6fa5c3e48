//! placeholder
pub mod sshd;
