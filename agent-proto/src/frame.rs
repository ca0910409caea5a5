//! Length-prefixed JSON frames: a 4-byte big-endian body length, then the body.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::MAX_FRAME_LEN;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection inside a frame (after part of the
    /// length or part of the body).
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// How many bytes of the frame arrived, length prefix included.
        got: usize,
        /// How many the frame should have had: 4 while the length itself
        /// was cut short, else 4 + the announced length.
        want: usize,
    },
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The body's length: announced by the prefix on reading, measured
        /// on writing.
        len: usize,
        /// The limit it is over ([`crate::MAX_FRAME_LEN`], or
        /// [`crate::MAX_OPEN_FRAME_LEN`] for a first frame).
        limit: usize,
    },
    /// The body is not the JSON document expected here.
    #[error("invalid frame body: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame and decodes its body.
///
/// Returns `Ok(None)` when the peer closed the connection cleanly before the
/// first byte of a frame.
pub async fn read_frame<R, T>(reader: &mut R, limit: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_frame_bytes(reader, limit).await? {
        None => Ok(None),
        Some(body) => serde_json::from_slice(&body).map(Some).map_err(FrameError::InvalidJson),
    }
}

/// Reads one frame and returns its raw body.
pub async fn read_frame_bytes<R>(reader: &mut R, limit: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut len_buf = [0u8; 4];
    let got = read_full(reader, &mut len_buf).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < len_buf.len() {
        return Err(FrameError::Truncated { got, want: 4 });
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    // The buffer grows with what arrives, not with what the length
    // announces: a peer that announces a megabyte and sends ten bytes holds
    // ten bytes of the reader's memory.
    let mut body = Vec::with_capacity(len.min(GROWTH_STEP));
    while body.len() < len {
        let start = body.len();
        let step = (len - start).min(GROWTH_STEP.max(start));
        body.resize(start + step, 0);
        let got = read_full(reader, &mut body[start..]).await?;
        if got < step {
            return Err(FrameError::Truncated {
                got: 4 + start + got,
                want: 4 + len,
            });
        }
    }
    Ok(Some(body))
}

/// The first allocation for a frame's body, and the least it grows by.
const GROWTH_STEP: usize = 16 * 1024;

/// Encodes `value` and writes it as one frame, then flushes.
pub async fn write_frame<W, T>(writer: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let body = encode_frame(value)?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

/// Encodes `value` as a complete frame (length prefix included).
pub fn encode_frame<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, value).map_err(FrameError::InvalidJson)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_FRAME_LEN,
        });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Reads until `buf` is full or end-of-file; returns how many bytes were read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn decode(bytes: &[u8]) -> Result<Option<Value>, FrameError> {
        let mut r = bytes;
        read_frame(&mut r, 64).await
    }

    #[tokio::test]
    async fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &json!({"id": 1, "op": "hello"})).await.unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        assert_eq!(decode(&buf).await.unwrap(), Some(json!({"id": 1, "op": "hello"})));
    }

    #[tokio::test]
    async fn clean_close_is_none() {
        assert!(decode(b"").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_length_and_body() {
        assert!(matches!(
            decode(b"\0\0").await,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        assert!(matches!(
            decode(b"\0\0\0\x0a{}").await,
            Err(FrameError::Truncated { got: 6, want: 14 })
        ));
    }

    #[tokio::test]
    async fn over_the_limit() {
        assert!(matches!(
            decode(&1000u32.to_be_bytes()).await,
            Err(FrameError::TooLarge { len: 1000, limit: 64 })
        ));
    }

    #[tokio::test]
    async fn large_bodies_arrive_whole_and_short_ones_are_truncated() {
        let body = vec![b'x'; 100_000];
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let mut r = &framed[..];
        assert_eq!(read_frame_bytes(&mut r, 1 << 20).await.unwrap(), Some(body));
        let mut r = &framed[..50_000];
        assert!(matches!(
            read_frame_bytes(&mut r, 1 << 20).await,
            Err(FrameError::Truncated {
                got: 50_000,
                want: 100_004
            })
        ));
    }

    #[tokio::test]
    async fn invalid_json() {
        assert!(matches!(
            decode(b"\0\0\0\x03{x}").await,
            Err(FrameError::InvalidJson(_))
        ));
    }
}
