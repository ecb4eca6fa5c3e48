//! sha256 of files, streamed: bundle files reach 130 MiB, so never read one
//! whole into memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// A sha256 digest as 64 lowercase hex characters, the form used in
/// `bundle.json`, `Cluster.spec.artifacts.sha256` and `sha256sum`.
pub type Sha256Hex = String;

/// Size and sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(u64, Sha256Hex)> {
    let mut hasher = Sha256::new();
    let size = io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// The first `n` bytes of `buf`, which a `read` into `buf` reported: an
/// error, not a panic, should a reader claim more than the buffer holds.
pub(crate) fn filled(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n).ok_or_else(|| {
        io::Error::other(format!(
            "a read reported {n} bytes into a buffer of {}",
            buf.len()
        ))
    })
}

/// Copy `from` into `to`, hashing on the way: size and sha256 of what
/// came, or `None` as soon as more than `limit` bytes did.
pub fn copy_hashed(
    from: &mut impl Read,
    to: &mut impl io::Write,
    limit: u64,
) -> io::Result<Option<(u64, Sha256Hex)>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = filled(&buf, n)?;
        size += n as u64;
        if size > limit {
            return Ok(None);
        }
        hasher.update(chunk);
        to.write_all(chunk)?;
    }
    Ok(Some((size, hex::encode(hasher.finalize()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (size, sum) = sha256_file(&path).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
