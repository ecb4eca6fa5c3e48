//! SSH transport benchmark (filled in below).
fn main() {}
