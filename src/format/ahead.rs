//! Read-ahead for a sequential pass: [`WORKERS`] threads authenticate,
//! decrypt and inflate the next frames while the caller's thread hashes
//! and writes the plaintext of the current one (a restore's work spread
//! over a two-core board's both cores: inflating alone costs about as much
//! as everything the caller's thread does).
//!
//! The caller's thread reads each frame's bytes from the archive (bounded
//! by the frame size, which the head is checked against before anything is
//! read by it) and hands frame `i` to worker `i % WORKERS`; each worker
//! opens its frames in order with the archive's [`FrameCodec`] (every frame
//! stands alone: its own tag, counter block and deflate stream), and the
//! plaintext is taken back from the workers in turn, so in frame order.
//! Nothing reaches the caller from a frame whose tag did not check.
//!
//! Invariants: at most [`DEPTH`] frames per worker are in flight, so memory
//! is fixed (`DEPTH * WORKERS + 1` pairs of frame-size buffers, reused); reading stops after a
//! frame whose head says it is the final one, so the source ends exactly
//! where a serial reader leaves it (at the tail); an error while reading
//! ahead (a truncated archive, a bad head) is reported when the frame it
//! belongs to is asked for, after the frames before it, as a serial reader
//! would; dropping it stops and joins the threads (each finishes at most
//! the frame it is opening).

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::frame::{read_body, Decoded, FrameCodec, FrameHead, Opened, FRAME_HEADER_LEN};
use super::FormatError;
use crate::crypto::TAG_LEN;

/// Frames read ahead per worker.
pub const DEPTH: usize = 2;

/// Frame-opening threads.
pub const WORKERS: usize = 2;

struct Bufs {
    stored: Vec<u8>,
    plain: Vec<u8>,
}

struct Job {
    index: u64,
    head: FrameHead,
    tag: [u8; TAG_LEN],
    bufs: Bufs,
}

type Done = (Bufs, Result<Decoded, FormatError>, u64);

struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(codec: &Arc<FrameCodec>, n: usize) -> std::io::Result<Worker> {
        let (jobs, job_rx) = sync_channel::<Job>(DEPTH);
        // Room for every frame in flight: the worker never waits to hand
        // one back, so dropping the job sender always ends it.
        let (done_tx, done) = sync_channel::<Done>(DEPTH);
        let theirs = Arc::clone(codec);
        let thread = std::thread::Builder::new()
            .name(format!("rvb-frames-{n}"))
            .spawn(move || {
                for mut job in job_rx {
                    let stored = &mut job.bufs.stored[..job.head.stored_len];
                    let r =
                        theirs.open(job.index, &job.head, stored, &job.tag, &mut job.bufs.plain);
                    let bytes = (FRAME_HEADER_LEN + job.head.stored_len + TAG_LEN) as u64;
                    if done_tx.send((job.bufs, r, bytes)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // No more jobs: the worker ends after the frame it is opening.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct ReadAhead {
    workers: Vec<Worker>,
    codec: Arc<FrameCodec>,
    free: Vec<Bufs>,
    /// The frame being consumed: its buffers and where its plaintext is.
    current: Option<(Bufs, Decoded)>,
    in_flight: usize,
    /// Index of the next frame to read.
    next_read: u64,
    /// Index of the next frame to take back (the one after the current).
    next_take: u64,
    /// Read no further: a head said it is the final frame, or reading failed.
    stopped: bool,
    /// What went wrong reading ahead, reported after the frames in flight.
    failed: Option<FormatError>,
}

impl ReadAhead {
    /// Start the worker for frames from `index` on (the source must be at
    /// that frame); `None` when no thread can be started or read-ahead is
    /// not allowed in this process (`crate::workers`), and the caller reads
    /// serially.
    pub fn start(codec: Arc<FrameCodec>, index: u64) -> Option<ReadAhead> {
        if !crate::workers::allowed() {
            return None;
        }
        let mut workers = Vec::with_capacity(WORKERS);
        for n in 0..WORKERS {
            match Worker::start(&codec, n) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    log::debug!("no frame-opening thread ({e}); {} started", workers.len());
                    break;
                }
            }
        }
        if workers.is_empty() {
            return None;
        }
        Some(ReadAhead {
            workers,
            codec,
            free: Vec::new(),
            current: None,
            in_flight: 0,
            next_read: index,
            next_take: index,
            stopped: false,
            failed: None,
        })
    }

    /// The worker that opens frame `index`.
    fn worker(&self, index: u64) -> &Worker {
        let n = self.workers.len() as u64;
        &self.workers[(index % n) as usize]
    }

    /// Read frame `index`'s bytes into a free pair of buffers.
    fn read_one(&mut self, src: &mut impl Read, index: u64) -> Result<Job, FormatError> {
        let mut head = [0u8; FRAME_HEADER_LEN];
        src.read_exact(&mut head)?;
        let head = self.codec.head(index, head)?;
        let size = self.codec.frame_size();
        let mut bufs = self.free.pop().unwrap_or_else(|| Bufs {
            stored: vec![0; size],
            plain: vec![0; size],
        });
        let mut tag = [0u8; TAG_LEN];
        if let Err(e) = read_body(src, &mut bufs.stored[..head.stored_len], &mut tag) {
            self.free.push(bufs);
            return Err(e.into());
        }
        Ok(Job {
            index,
            head,
            tag,
            bufs,
        })
    }

    /// Keep [`DEPTH`] frames in flight, up to the final one.
    fn fill(&mut self, src: &mut impl Read) {
        while !self.stopped && self.in_flight < DEPTH * self.workers.len() {
            let index = self.next_read;
            let job = self.read_one(src, index).and_then(|job| {
                let next = index
                    .checked_add(1)
                    .ok_or(FormatError::Corrupt("frame index overflows".into()))?;
                Ok((job, next))
            });
            let (job, next) = match job {
                Ok(j) => j,
                Err(e) => {
                    self.failed = Some(e);
                    self.stopped = true;
                    return;
                }
            };
            let last = job.head.says_last();
            let sent = self.worker(index).jobs.as_ref().map(|j| j.send(job));
            if !matches!(sent, Some(Ok(()))) {
                self.failed = Some(thread_gone());
                self.stopped = true;
                return;
            }
            self.in_flight += 1;
            self.next_read = next;
            self.stopped = last;
        }
    }

    /// Open the next frame, as [`super::frame::FrameOpener::open_next`]
    /// does; its plaintext is then in [`Self::plain`].
    pub fn next(&mut self, src: &mut impl Read) -> Result<Opened, FormatError> {
        if let Some((b, _)) = self.current.take() {
            self.free.push(b);
        }
        self.fill(src);
        if self.in_flight == 0 {
            self.stopped = true;
            return Err(self
                .failed
                .take()
                .unwrap_or_else(|| FormatError::Corrupt("no frame after the final one".into())));
        }
        let take = self.next_take;
        let (bufs, opened, stored_bytes) =
            self.worker(take).done.recv().map_err(|_| thread_gone())?;
        self.in_flight -= 1;
        self.next_take = take.wrapping_add(1);
        match opened {
            Ok(d) => {
                self.current = Some((bufs, d));
                Ok(Opened {
                    last: d.last,
                    stored_bytes,
                })
            }
            Err(e) => {
                self.free.push(bufs);
                self.stopped = true;
                Err(e)
            }
        }
    }

    /// Plaintext of the frame last opened (empty after a failed open).
    pub fn plain(&self) -> &[u8] {
        match &self.current {
            Some((b, d)) if d.in_plain => &b.plain[..d.len],
            Some((b, d)) => &b.stored[..d.len],
            None => &[],
        }
    }
}

fn thread_gone() -> FormatError {
    FormatError::Io(std::io::Error::other(
        "the frame-reading thread stopped unexpectedly",
    ))
}
