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
    /// The SHA-256 as 64 lowercase hex digits.
    pub sha256: String,
    /// The number of bytes hashed.
    pub size: u64,
}

/// Buffers between the reading thread and the hashing one.
const HASH_BUFFERS: usize = 3;

/// Hashes everything `reader` yields, reading on a thread of its own while
/// this one hashes (reading and hashing overlap: with the read in the same
/// thread, copying a file out of the page cache cost a fifth of
/// OpenSSL's throughput). Memory: three 1 MiB buffers.
pub fn sha256_reader<R: Read + Send>(reader: R) -> io::Result<Digest> {
    use std::sync::mpsc::sync_channel;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(HASH_BUFFERS);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
        for _ in 0..HASH_BUFFERS {
            // The channel has room for every buffer: this cannot block.
            let _ = empty_tx.send(vec![0u8; HASH_BUFFER_BYTES]);
        }
        scope.spawn(move || {
            let mut reader = reader;
            // Ends when the hashing side hangs up (it returned).
            while let Ok(mut buf) = empty_rx.recv() {
                let n = loop {
                    match reader.read(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                let done = matches!(n, Ok(0) | Err(_));
                if full_tx.send(n.map(|n| (buf, n))).is_err() || done {
                    break;
                }
            }
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for message in full_rx {
            let (buf, n) = message?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            size += n as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(Digest {
            sha256: hex::encode(hasher.finalize()),
            size,
        })
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

    /// Fails after yielding some bytes.
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_is_returned_not_a_partial_digest() {
        let e = sha256_reader(Broken(HASH_BUFFER_BYTES * 5 + 3)).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
    }

    #[test]
    fn empty_input_has_the_known_digest() {
        assert_eq!(
            sha256_reader(&b""[..]).unwrap().sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_bytes(b"").sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

/// An incremental hash, for data that is written elsewhere as it is hashed.
#[derive(Clone, Debug, Default)]
pub struct Hasher {
    inner: Sha256,
    size: u64,
}

impl Hasher {
    /// A hash of no bytes yet.
    pub fn new() -> Hasher {
        Hasher::default()
    }
    /// Hashes the next bytes and counts them.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.size += bytes.len() as u64;
    }
    /// The digest and byte count of everything given to [`Hasher::update`].
    pub fn finish(self) -> Digest {
        Digest {
            sha256: hex::encode(self.inner.finalize()),
            size: self.size,
        }
    }
}
