//! Group commit: concurrent requests that each need a small write hand it to one writer task,
//! which applies everything waiting in one transaction and answers each request. SQLite has a
//! single writer, so writes taken one at a time queue on its lock (and sleep in its busy handler);
//! taken together they cost about one commit.
//!
//! A caller either waits for its batch to commit ([`Batcher::submit`]) or only queues the item
//! ([`Batcher::enqueue`], for writes the request need not wait for, such as most audit events).
//! Waiting callers are bounded by the requests in flight. Queued-only items are not, so they are
//! capped: while the database is slow or down they pile up, and past [`MAX_QUEUED`] new ones are
//! dropped, counted in `keyfob_batch_items_dropped_total` and logged once per episode, rather than
//! let the queue grow with every request a client makes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keyfob_store::StoreError;
use tokio::sync::{mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, Arc<StoreError>>>;

/// The most items queued without a waiter at once, per writer.
pub const MAX_QUEUED: usize = 65_536;

/// A writer task applying items of type `T` in batches, each answered with an `R`.
pub struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<(T, Option<Reply<R>>)>,
    name: &'static str,
    queue: Arc<Queue>,
}

/// How many queued-only items wait, against their cap.
struct Queue {
    waiting: AtomicUsize,
    limit: usize,
    /// Set while items are being dropped, so that an episode is logged once.
    dropping: AtomicBool,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            name: self.name,
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Clone + Send + 'static> Batcher<T, R> {
    /// Starts the writer task. `write` applies up to `max_batch` items at once and answers with
    /// one `R` per item, in order; when it fails, every item of the batch gets the error.
    pub fn spawn<F, Fut>(name: &'static str, max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        Self::spawn_with_queue_limit(name, max_batch, MAX_QUEUED, write)
    }

    /// [`Batcher::spawn`], with at most `queue_limit` queued-only items waiting at once.
    pub fn spawn_with_queue_limit<F, Fut>(
        name: &'static str,
        max_batch: usize,
        queue_limit: usize,
        write: F,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, Option<Reply<R>>)>();
        let queue = Arc::new(Queue {
            waiting: AtomicUsize::new(0),
            limit: queue_limit,
            dropping: AtomicBool::new(false),
        });
        let drained = queue.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let (items, replies): (Vec<T>, Vec<Option<Reply<R>>>) = batch.drain(..).unzip();
                let queued_only = replies.iter().filter(|r| r.is_none()).count();
                drained.waiting.fetch_sub(queued_only, Ordering::AcqRel);
                let count = items.len();
                let answers = match write(items).await {
                    Ok(answers) if answers.len() == count => answers.into_iter().map(Ok).collect(),
                    Ok(answers) => {
                        let err = StoreError::Corrupt(format!("{} answers", answers.len()));
                        failed(name, count, err)
                    }
                    Err(err) => failed(name, count, err),
                };
                for (reply, answer) in replies.into_iter().zip(answers) {
                    if let Some(reply) = reply {
                        let _ = reply.send(answer);
                    }
                }
            }
        });
        Batcher { tx, name, queue }
    }

    /// Hands one item to the writer and waits until its batch is committed.
    pub async fn submit(&self, item: T) -> Result<R, Arc<StoreError>> {
        let (reply, done) = oneshot::channel();
        let closed = || Arc::new(StoreError::Corrupt(format!("{} stopped", self.name)));
        self.tx.send((item, Some(reply))).map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }

    /// Queues one item for the next batch without waiting for it; a batch that fails is logged.
    /// Past the queue's cap the item is dropped and counted.
    pub fn enqueue(&self, item: T) {
        let queue = &self.queue;
        if queue.waiting.fetch_add(1, Ordering::AcqRel) >= queue.limit {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keyfob_batch_items_dropped_total", "writer" => self.name)
                .increment(1);
            if !queue.dropping.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    writer = self.name,
                    limit = queue.limit,
                    "the write queue is full (the database is slow or down); dropping items"
                );
            }
            return;
        }
        queue.dropping.store(false, Ordering::Release);
        if self.tx.send((item, None)).is_err() {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(writer = self.name, "writer stopped; item dropped");
        }
    }

    /// How many queued-only items wait to be written.
    pub fn queued(&self) -> usize {
        self.queue.waiting.load(Ordering::Acquire)
    }
}

/// Every item of a failed batch gets the error, which is logged once (not at all while the
/// database is known to be down: that was logged when it went down).
fn failed<R>(name: &str, count: usize, err: StoreError) -> Vec<Result<R, Arc<StoreError>>> {
    if err.is_known_outage() {
        tracing::debug!(writer = name, items = count, error = %err, "batch not written");
    } else {
        tracing::error!(writer = name, items = count, error = %err, "batch not written");
    }
    let err = Arc::new(err);
    (0..count).map(|_| Err(err.clone())).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_batches_and_get_their_own_answers() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counter = batches.clone();
        let doubler = Batcher::spawn("doubler", 64, move |items: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok(items.into_iter().map(|n| n * 2).collect())
            }
        });
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { doubler.submit(n).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert_eq!(answers, (0..200).map(|n| n * 2).collect::<Vec<_>>());
        let batches = batches.load(Ordering::SeqCst);
        assert!((4..200).contains(&batches), "{batches} batches");
    }

    #[tokio::test]
    async fn queued_items_are_written_with_the_next_batch() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = written.clone();
        let log = Batcher::spawn("log", 8, move |items: Vec<u32>| {
            let sink = sink.clone();
            async move {
                let count = items.len();
                sink.lock().unwrap().extend(items);
                Ok(vec![(); count])
            }
        });
        log.enqueue(1);
        log.enqueue(2);
        // A waiting caller's batch comes after (or with) the queued ones.
        log.submit(3).await.unwrap();
        assert_eq!(*written.lock().unwrap(), [1, 2, 3]);
    }

    #[tokio::test]
    async fn queued_only_items_are_capped_while_the_writer_is_stuck() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let (open, count) = (gate.clone(), written.clone());
        let log = Batcher::spawn_with_queue_limit("stuck", 16, 100, move |items: Vec<u32>| {
            let (open, count) = (open.clone(), count.clone());
            async move {
                // A database that does not answer until the gate opens.
                open.acquire().await.unwrap().forget();
                count.fetch_add(items.len(), Ordering::SeqCst);
                Ok(vec![(); items.len()])
            }
        });
        for n in 0..100_000u32 {
            log.enqueue(n);
            assert!(log.queued() <= 100, "{} queued", log.queued());
        }
        // The writer holds at most one batch; the rest waits within the cap.
        gate.add_permits(1_000);
        for _ in 0..200 {
            if log.queued() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(log.queued(), 0);
        let written = written.load(Ordering::SeqCst);
        assert!((100..=116).contains(&written), "{written} written");
        // Once there is room again, items are taken.
        log.submit(1).await.unwrap();
        log.enqueue(2);
        assert!(log.queued() <= 1);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_item() {
        let failing = Batcher::spawn("failing", 8, |_items: Vec<u32>| async {
            Err::<Vec<()>, _>(StoreError::Corrupt("disk on fire".into()))
        });
        let err = failing.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
