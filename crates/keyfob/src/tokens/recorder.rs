//! Records minted tokens in batches: each mint waits for its row to be committed, but concurrent
//! mints share one transaction, so SQLite's single writer is not a bottleneck.

use std::sync::Arc;

use keyfob_store::{Store, StoreError, TokenRow};
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<(), Arc<StoreError>>>;

#[derive(Clone)]
pub struct TokenRecorder {
    tx: mpsc::Sender<(TokenRow, Reply)>,
}

impl TokenRecorder {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(TokenRow, Reply)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (rows, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let result = store.insert_tokens(&rows).await.map_err(Arc::new);
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        TokenRecorder { tx }
    }

    /// Records one token, returning once it is committed.
    pub async fn record(&self, row: TokenRow) -> Result<(), Arc<StoreError>> {
        let (reply, done) = oneshot::channel();
        let closed = || Arc::new(StoreError::Corrupt("token recorder stopped".into()));
        self.tx.send((row, reply)).await.map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }
}
