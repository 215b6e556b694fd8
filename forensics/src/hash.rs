//! Streaming SHA-256 in bounded memory.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Read buffer: large enough that the SHA-256 core (not the read calls)
/// dominates, small enough to keep memory flat for any file size.
pub const HASH_BUFFER_BYTES: usize = 1 << 20;

/// A SHA-256 digest (lowercase hex) with the number of bytes hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Digest {
    pub sha256: String,
    pub size: u64,
}

/// Hashes everything `reader` yields.
pub fn sha256_reader<R: Read>(mut reader: R) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok(Digest {
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Hashes a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> Digest {
    Digest {
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_bytes_agree_across_buffer_boundaries() {
        let data: Vec<u8> = (0..(HASH_BUFFER_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        assert_eq!(sha256_reader(&data[..]).unwrap(), sha256_bytes(&data));
    }

    #[test]
    fn empty_input_has_the_known_digest() {
        assert_eq!(
            sha256_bytes(b"").sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

/// Hashes everything an async reader yields (an S3 object body, a file),
/// in bounded memory.
pub async fn sha256_async_reader<R>(mut reader: R) -> io::Result<Digest>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok(Digest {
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// An incremental hash, for data that is written elsewhere as it is hashed.
#[derive(Clone, Debug, Default)]
pub struct Hasher {
    inner: Sha256,
    size: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.size += bytes.len() as u64;
    }
    pub fn finish(self) -> Digest {
        Digest {
            sha256: hex::encode(self.inner.finalize()),
            size: self.size,
        }
    }
}
