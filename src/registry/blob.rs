//! Reading one blob: HTTP Range windows that grow as the reader asks for more, resumption after
//! dropped connections, and digest verification.

use std::io::{self, Read};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::manifest::Descriptor;
use super::reference::ImageRef;
use super::{FIRST_BACKOFF, Notice, Registry, Wanted};
use crate::error::{Error, Result, chain};

/// Resumptions of one blob after its connection dropped mid-stream.
const MAX_RESUMES: u32 = 4;

impl Registry {
    /// Open `len` bytes of a blob at `offset` (to the end when `len` is None).
    async fn open_blob(
        &self,
        image: &ImageRef,
        blob: &Descriptor,
        offset: u64,
        len: Option<u64>,
    ) -> Result<(BoxStream<'static, io::Result<Bytes>>, Delivery)> {
        let wanted = Wanted {
            path: format!("blobs/{}", blob.digest),
            accept: None,
            // The whole blob is asked for without a Range header.
            range: (offset > 0 || len.is_some_and(|l| l < blob.size)).then_some((offset, len)),
        };
        self.call(image, wanted, |response: reqwest::Response| async move {
            let delivery = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
                Delivery::Range
            } else {
                Delivery::Whole
            };
            let stream = response.bytes_stream().map(|r| r.map_err(io::Error::other));
            Ok((stream.boxed(), delivery))
        })
        .await
    }

    /// A blocking reader of one blob, read in HTTP Range windows.
    /// Must be used from a blocking thread of the runtime behind `handle`.
    pub fn blob_reader(
        &self,
        handle: tokio::runtime::Handle,
        image: &ImageRef,
        blob: &Descriptor,
    ) -> BlobReader {
        BlobReader {
            handle,
            registry: self.clone(),
            image: image.clone(),
            blob: blob.clone(),
            stream: None,
            chunk: Bytes::new(),
            position: 0,
            response_end: None,
            skip: 0,
            // A small blob in one request: its size is in the manifest.
            window: if (1..=VERIFIED_WHOLE).contains(&blob.size) {
                blob.size
            } else {
                FIRST_WINDOW
            },
            hasher: sha2::Sha256::default(),
            failures: 0,
            loaded: false,
        }
    }
}

/// What the registry sent for a ranged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// 206: exactly the range asked for.
    Range,
    /// 200: the whole blob from byte 0 (the registry ignored Range).
    Whole,
}

/// First ranged read of a blob; each next one doubles, up to the maximum. The metadata we want
/// sits in the first KiBs of small layers, so most blobs take one small request, and no more than
/// one window is ever in flight beyond what the reader needed.
const FIRST_WINDOW: u64 = 64 * 1024;
const MAX_WINDOW: u64 = 16 * 1024 * 1024;

/// Blobs up to this size are read whole and verified against their digest before the reader
/// sees a byte (they cost one window anyway). Bigger ones are verified only when read to the end.
const VERIFIED_WHOLE: u64 = 1024 * 1024;

/// `Read` over a registry blob, for the tar and decompression readers: HTTP Range windows,
/// resumption after dropped connections, and digest verification.
pub struct BlobReader {
    handle: tokio::runtime::Handle,
    registry: Registry,
    image: ImageRef,
    blob: Descriptor,
    stream: Option<BoxStream<'static, io::Result<Bytes>>>,
    /// Bytes received but not yet handed to the reader.
    chunk: Bytes,
    /// How far into the blob the received bytes reach.
    position: u64,
    /// Where the current response ends (exclusive), when known.
    response_end: Option<u64>,
    /// Bytes of a whole-blob response to drop before `position` is reached again.
    skip: u64,
    window: u64,
    hasher: sha2::Sha256,
    /// Failures since the last byte received.
    failures: u32,
    /// Small blob already loaded and verified.
    loaded: bool,
}

/// The registry error behind an `io::Error` from a `BlobReader`, if that is what it was.
#[derive(Debug)]
pub struct BlobError(pub Error);

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BlobError {}

impl BlobReader {
    fn fail(&self, detail: String) -> io::Error {
        io::Error::other(BlobError(Error::RegistryProtocol {
            registry: self.image.registry.clone(),
            image: self.image.to_string(),
            detail,
        }))
    }

    fn resume_or_fail(&mut self, reason: String) -> io::Result<()> {
        self.stream = None;
        self.failures += 1;
        if self.failures > MAX_RESUMES {
            return Err(self.fail(format!(
                "reading blob {} failed {} times in a row at byte {}: {reason}",
                self.blob.digest, self.failures, self.position
            )));
        }
        self.registry.notify(Notice::Retrying {
            registry: self.image.registry.clone(),
            attempt: self.failures,
            reason: format!(
                "blob {} dropped at byte {}: {reason}",
                self.blob.digest, self.position
            ),
        });
        let backoff = FIRST_BACKOFF * 2u32.pow(self.failures - 1);
        self.handle.block_on(tokio::time::sleep(backoff));
        Ok(())
    }

    /// Open the next window at `position`. Returns false at the end of the blob.
    fn open_next(&mut self) -> io::Result<bool> {
        let size = self.blob.size;
        if size > 0 && self.position >= size {
            return Ok(false);
        }
        let len = (size > 0).then(|| self.window.min(size - self.position));
        let (stream, delivery) = self
            .handle
            .block_on(
                self.registry
                    .open_blob(&self.image, &self.blob, self.position, len),
            )
            .map_err(|e| io::Error::other(BlobError(e)))?;
        match delivery {
            Delivery::Range => {
                self.response_end = len.map(|l| self.position + l);
            }
            Delivery::Whole => {
                // Start over from byte 0: drop what was already received, hash it again.
                self.skip = self.position;
                self.position = 0;
                self.hasher = sha2::Sha256::default();
                self.response_end = (size > 0).then_some(size);
            }
        }
        self.stream = Some(stream);
        self.window = (self.window * 2).min(MAX_WINDOW);
        Ok(true)
    }

    /// At the end of the blob: the bytes must match the digest the manifest promised.
    fn verify(&self) -> io::Result<()> {
        use sha2::Digest;
        let Some(expected) = self.blob.digest.strip_prefix("sha256:") else {
            return Ok(()); // Other algorithms: trust the registry.
        };
        let actual = hex::encode(self.hasher.clone().finalize());
        if actual == expected {
            Ok(())
        } else {
            Err(self.fail(format!(
                "blob {} does not match its digest (got sha256:{actual})",
                self.blob.digest
            )))
        }
    }

    /// The next bytes of the blob from the network; None (after verification) at its end.
    fn next_bytes(&mut self) -> io::Result<Option<Bytes>> {
        use sha2::Digest;
        loop {
            if self.stream.is_none() && !self.open_next()? {
                self.verify()?;
                return Ok(None);
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let stall = self.registry.request_timeout();
            let next = self
                .handle
                .block_on(async { tokio::time::timeout(stall, stream.next()).await });
            let Ok(next) = next else {
                self.resume_or_fail(format!("no data for {}", humantime::format_duration(stall)))?;
                continue;
            };
            match next {
                Some(Ok(mut bytes)) => {
                    self.failures = 0;
                    self.registry
                        .inner
                        .stats
                        .blob_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    self.hasher.update(&bytes);
                    if self.skip > 0 {
                        let dropped = (self.skip as usize).min(bytes.len());
                        bytes = bytes.slice(dropped..);
                        self.skip -= dropped as u64;
                        self.position += dropped as u64;
                    }
                    self.position += bytes.len() as u64;
                    if !bytes.is_empty() {
                        return Ok(Some(bytes));
                    }
                }
                Some(Err(e)) => self.resume_or_fail(chain(&e))?,
                None => {
                    self.stream = None;
                    match self.response_end {
                        Some(end) if self.position < end => self.resume_or_fail(format!(
                            "connection closed after {} of {} bytes",
                            self.position, self.blob.size
                        ))?,
                        Some(_) => {}
                        // Unknown size: the end of the response is the end of the blob.
                        None => {
                            self.verify()?;
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Read a small blob completely and verify it before anything is served from it.
    fn load_whole(&mut self) -> io::Result<Bytes> {
        let mut whole = Vec::with_capacity(self.blob.size as usize);
        while let Some(bytes) = self.next_bytes()? {
            if whole.len() as u64 + bytes.len() as u64 > VERIFIED_WHOLE {
                return Err(self.fail(format!(
                    "blob {} is larger than the {} bytes its manifest declares",
                    self.blob.digest, self.blob.size
                )));
            }
            whole.extend_from_slice(&bytes);
        }
        Ok(Bytes::from(whole))
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            let small = self.blob.size > 0 && self.blob.size <= VERIFIED_WHOLE;
            if small && !self.loaded {
                self.loaded = true;
                self.chunk = self.load_whole()?;
            } else if let Some(bytes) = self.next_bytes()? {
                self.chunk = bytes;
            }
        }
        let n = self.chunk.len().min(out.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}
