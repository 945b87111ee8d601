//! A body read to its end into one [`Bytes`]: the request's, before its last extractor parses it,
//! and the handler's response, to be stored.
//!
//! `http_body_util`'s `collect` keeps every chunk in a list of its own (one more allocation per
//! body) and joins them at the end. Most bodies here come in one chunk — a request read from a
//! buffer, a handler's `Json` — and that chunk is returned as it is; a body of several chunks is
//! joined into one buffer as it is read.

use std::pin::pin;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt as _;

/// Reads `body` to its end: its data, in one piece. Trailers are dropped.
///
/// # Errors
///
/// The body's own error, as soon as it yields one.
pub(crate) async fn to_bytes<B>(body: B) -> Result<Bytes, B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut body = pin!(body);
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if let Some(joined) = &mut joined {
            joined.extend_from_slice(&data);
        } else if first.is_empty() {
            first = data;
        } else if !data.is_empty() {
            let hint = usize::try_from(body.size_hint().lower()).unwrap_or(0);
            let mut buffer = BytesMut::with_capacity(first.len() + data.len() + hint);
            buffer.extend_from_slice(&first);
            buffer.extend_from_slice(&data);
            joined = Some(buffer);
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Chunk = Result<Frame<Bytes>, &'static str>;

    /// A body that yields `frames`, one at a time.
    fn chunks(frames: Vec<Chunk>) -> StreamBody<stream::Iter<std::vec::IntoIter<Chunk>>> {
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn one_chunk_is_returned_as_it_is() {
        let data = Bytes::from_static(b"{\"amount\":1999}");
        let read = to_bytes(http_body_util::Full::new(data.clone()))
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        assert_eq!(read, data);
        // The same memory, not a copy.
        assert_eq!(read.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn chunks_are_joined_in_order_and_trailers_dropped() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
        let body = chunks(vec![
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::data(Bytes::from_static(b"e"))),
            Ok(Frame::trailers(trailers)),
        ]);
        assert_eq!(to_bytes(body).await, Ok(Bytes::from_static(b"abcde")));
    }

    #[tokio::test]
    async fn an_empty_body_reads_as_nothing() {
        let body = http_body_util::Empty::<Bytes>::new();
        let read = to_bytes(body)
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        assert!(read.is_empty());
    }

    #[tokio::test]
    async fn the_first_error_ends_the_read() {
        let body = chunks(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("connection reset"),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ]);
        assert_eq!(to_bytes(body).await, Err("connection reset"));
    }
}
