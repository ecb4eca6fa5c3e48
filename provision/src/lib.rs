//! placeholder
pub mod artifacts;
pub mod ssh;
