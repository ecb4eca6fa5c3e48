//! placeholder
pub mod ssh;
