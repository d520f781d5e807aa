//! Connection timeouts that `axum::serve` cannot set. hyper has a `header_read_timeout`, but
//! it only works with a timer installed on its connection builder, and `axum::serve` builds
//! its own without one — so, as served, a client could open connections and send nothing, or
//! a header byte now and then, and hold each open for ever (and stall graceful shutdown,
//! which waits for a half-read request). [`TimedListener`] wraps any listener's connections in
//! [`TimedIo`], which fails a read — so hyper closes the connection — once the connection has
//! been idle for `idle_timeout`, or a request's headers are still incomplete `header_read_timeout`
//! after its first byte. While the handler has a request ([`ConnActivity::begin`], reached
//! through axum's `ConnectInfo`), no clock runs here: reading the body is bounded by the
//! handler's own timeout, and waiting for the pipeline's acknowledgement must not cut the
//! connection under a response on its way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::log_limit::LimitedLog;
use super::metrics::FirehoseMetrics;

/// How long a connection may stay silent, by phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Between requests (and before the first).
    pub(crate) idle: Duration,
    /// From a request's first byte to the end of its headers.
    pub(crate) headers: Duration,
}

/// One connection's requests as the handler sees them.
#[derive(Debug, Default)]
struct Activity {
    in_request: AtomicBool,
    /// Requests finished, so the connection notices a new idle period even if it never
    /// polled a read while `in_request` was set.
    finished: AtomicU64,
    /// The connection's task, parked on a read without a clock while a request was handled.
    /// hyper does not read again after writing the response as long as its pending read has
    /// not woken, so the end of a request must wake it for the idle clock to start.
    parked: Mutex<Option<Waker>>,
}

/// The handler's handle on its connection, delivered as axum `ConnectInfo`.
#[derive(Debug, Clone)]
pub(crate) struct ConnActivity(Arc<Activity>);

impl ConnActivity {
    /// Marks a request as being handled until the guard is dropped.
    pub(crate) fn begin(&self) -> RequestGuard {
        self.0.in_request.store(true, Ordering::Release);
        RequestGuard(Arc::clone(&self.0))
    }
}

pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_request.store(false, Ordering::Release);
        let parked = self
            .0
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = parked {
            waker.wake();
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's first byte.
    Idle,
    /// A request has begun; its headers are not all in.
    Headers,
    /// The handler has the request.
    Handled,
}

/// A listener whose connections time out when silent.
pub(crate) struct TimedListener<L> {
    inner: L,
    timeouts: Timeouts,
    metrics: FirehoseMetrics,
    log: Arc<LimitedLog>,
}

impl<L> TimedListener<L> {
    pub(crate) fn new(
        inner: L,
        timeouts: Timeouts,
        metrics: FirehoseMetrics,
        log: Arc<LimitedLog>,
    ) -> Self {
        TimedListener {
            inner,
            timeouts,
            metrics,
            log,
        }
    }
}

impl<L> Listener for TimedListener<L>
where
    L: Listener<Addr = SocketAddr>,
{
    type Io = TimedIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = self.inner.accept().await;
        let timed = TimedIo {
            io,
            activity: Arc::new(Activity::default()),
            timeouts: self.timeouts,
            phase: Phase::Idle,
            seen_finished: 0,
            deadline: Box::pin(tokio::time::sleep(self.timeouts.idle)),
            peer,
            metrics: self.metrics.clone(),
            log: Arc::clone(&self.log),
        };
        (timed, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<L> Connected<IncomingStream<'_, TimedListener<L>>> for ConnActivity
where
    L: Listener<Addr = SocketAddr>,
{
    fn connect_info(stream: IncomingStream<'_, TimedListener<L>>) -> Self {
        ConnActivity(Arc::clone(&stream.io().activity))
    }
}

/// A connection whose reads fail with `TimedOut` after too long a silence.
pub(crate) struct TimedIo<Io> {
    io: Io,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    phase: Phase,
    seen_finished: u64,
    deadline: Pin<Box<Sleep>>,
    peer: SocketAddr,
    metrics: FirehoseMetrics,
    log: Arc<LimitedLog>,
}

impl<Io> TimedIo<Io> {
    /// Follows the handler: a request being handled stops the clock, a finished one starts
    /// the idle clock afresh.
    fn track_handler(&mut self) {
        if self.activity.in_request.load(Ordering::Acquire) {
            self.phase = Phase::Handled;
            return;
        }
        let finished = self.activity.finished.load(Ordering::Acquire);
        if finished != self.seen_finished {
            self.seen_finished = finished;
            self.phase = Phase::Idle;
            self.deadline
                .as_mut()
                .reset(Instant::now() + self.timeouts.idle);
        }
    }

    /// Leaves `waker` for the end of the request being handled. If the request ended before
    /// it was left, wakes it at once: the next read starts the idle clock.
    fn park(&self, waker: &Waker) {
        let mut parked = self
            .activity
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.activity.in_request.load(Ordering::Acquire) {
            match parked.as_mut() {
                Some(w) => w.clone_from(waker),
                None => *parked = Some(waker.clone()),
            }
        } else {
            drop(parked);
            waker.wake_by_ref();
        }
    }

    fn timed_out(&self) -> io::Error {
        let (phase, limit) = match self.phase {
            Phase::Headers => ("headers", self.timeouts.headers),
            Phase::Idle | Phase::Handled => ("idle", self.timeouts.idle),
        };
        self.metrics.connection_timed_out(phase);
        if self.phase == Phase::Headers {
            // An idle connection closing is routine; a request cut short is a failure.
            self.log.write(|| {
                format!(
                    "albwatch: firehose connection_timed_out phase=headers peer={} \
                     limit_secs={}",
                    self.peer,
                    limit.as_secs()
                )
            });
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete request {phase} within {} s", limit.as_secs()),
        )
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for TimedIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.track_handler();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The clock for the headers starts at a request's first byte, and is not
                // restarted by later ones: a byte a second must not keep a request alive.
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::Headers;
                    this.deadline
                        .as_mut()
                        .reset(Instant::now() + this.timeouts.headers);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.phase == Phase::Handled => {
                this.park(cx.waker());
                Poll::Pending
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.timed_out())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for TimedIo<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
