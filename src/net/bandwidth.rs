//! Wire bytes of every connection, counted where they cross the muxer: a
//! wrapper around each connection's [`StreamMuxerBox`] whose substreams add
//! what they read and write to two shared counters. The counters are
//! Prometheus series (`seedswarm_wire_bytes_total{direction}`) and are read
//! directly by the node ([`Bandwidth::totals`]), never by rendering the
//! registry.

use futures::io::{IoSlice, IoSliceMut};
use futures::{ready, AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// Inbound and outbound wire bytes of all connections.
#[derive(Clone, Debug)]
pub struct Bandwidth {
    inbound: Counter,
    outbound: Counter,
}

impl Bandwidth {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let family = Family::<Direction, Counter>::default();
        registry.sub_registry_with_prefix("seedswarm").register(
            "wire_bytes",
            "Bytes read and written on every connection (all protocols, after muxing)",
            family.clone(),
        );
        let get = |direction| family.get_or_create(&Direction { direction }).clone();
        Self {
            inbound: get("in"),
            outbound: get("out"),
        }
    }

    /// Total bytes (inbound, outbound).
    pub fn totals(&self) -> (u64, u64) {
        (self.inbound.get(), self.outbound.get())
    }

    /// Wraps a connection's muxer so its substreams are counted.
    pub fn wrap(&self, inner: StreamMuxerBox) -> StreamMuxerBox {
        StreamMuxerBox::new(Muxer {
            inner,
            bw: self.clone(),
        })
    }
}

struct Muxer {
    inner: StreamMuxerBox,
    bw: Bandwidth,
}

impl StreamMuxer for Muxer {
    type Substream = Substream;
    type Error = io::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Substream, io::Error>> {
        let inner = ready!(Pin::new(&mut self.inner).poll_inbound(cx))?;
        Poll::Ready(Ok(Substream {
            inner,
            bw: self.bw.clone(),
        }))
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Substream, io::Error>> {
        let inner = ready!(Pin::new(&mut self.inner).poll_outbound(cx))?;
        Poll::Ready(Ok(Substream {
            inner,
            bw: self.bw.clone(),
        }))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, io::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

struct Substream {
    inner: SubstreamBox,
    bw: Bandwidth,
}

impl AsyncRead for Substream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.bw.inbound.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read_vectored(cx, bufs))?;
        self.bw.inbound.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Substream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.bw.outbound.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.bw.outbound.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
