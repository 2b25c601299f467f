//! The worker's sender threads, and how threads are started away from PostgreSQL's signals.

use super::*;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs `f` with every signal blocked in the calling thread, so threads it spawns start with
/// all signals blocked: PostgreSQL's handlers must only ever run on the main thread. The mask
/// is restored however `f` ends (a panic included), and only `f` runs with it.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        Restore(old)
    };
    f()
}

/// A fixed set of sender threads sharing one keep-alive connection pool. Answers go to the
/// caller's callback (false: nobody listens any more, the thread ends), which a newer pool
/// (after a reload) shares: one place to wait on.
pub struct Pool {
    pub(crate) jobs: Option<Sender<Job>>,
    pub(crate) closed: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub fn new(
        size: usize,
        settings: &ClientSettings,
        results: Arc<dyn Fn(Outcome) -> bool + Send + Sync>,
    ) -> Pool {
        let (job_tx, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let agent = agent(settings, None);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = with_signals_blocked(|| {
            (0..size.max(1))
                .filter_map(|i| {
                    let rx = Arc::clone(&job_rx);
                    let tx = Arc::clone(&results);
                    let agent = agent.clone();
                    let closed = Arc::clone(&closed);
                    std::thread::Builder::new()
                        .name(format!("webhooks-http-{i}"))
                        .spawn(move || loop {
                            let job = match rx.lock() {
                                Ok(guard) => match guard.recv() {
                                    Ok(j) => j,
                                    Err(_) => return,
                                },
                                Err(_) => return,
                            };
                            if closed.load(std::sync::atomic::Ordering::Relaxed)
                                || job.not_after.is_some_and(|t| Instant::now() >= t)
                            {
                                // Not sent: said so, so that its slot is freed and its delivery
                                // given back without waiting for the lease.
                                let unsent = Outcome::unsent(job.tag, false);
                                if !tx(unsent) {
                                    return;
                                }
                                continue;
                            }
                            // Every job gets an answer, whatever happens in the request.
                            let tag = job.tag;
                            let outcome =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    send(&agent, &job)
                                }))
                                .unwrap_or_else(|_| Outcome {
                                    tag,
                                    error: Some("internal: the request failed unexpectedly".into()),
                                    started_at_us: now_us(),
                                    ..Default::default()
                                });
                            if !tx(outcome) {
                                return;
                            }
                        })
                        .ok()
                })
                .collect()
        });
        Pool {
            jobs: Some(job_tx),
            closed,
            threads,
        }
    }

    pub fn size(&self) -> usize {
        self.threads.len()
    }

    /// Queued requests are dropped, unstarted, from now on (requests under way finish).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a job; false when no sender thread is left to take it.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

impl Drop for Pool {
    /// Closes the queue without waiting: a thread ends after the request it is making (bounded
    /// by the timeout), and queued requests are never started. Waiting here would hold a
    /// reload or a shutdown behind slow receivers.
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.jobs.take();
        self.threads.clear();
    }
}
