//! Records minted tokens in batches: each mint waits for its row to be committed, but concurrent
//! mints share one multi-row insert, so SQLite's single writer is not a bottleneck.

use std::sync::Arc;

use keyfob_store::{Store, StoreError, TokenRow};

use crate::batch::Batcher;

const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub struct TokenRecorder {
    batcher: Batcher<TokenRow, ()>,
}

impl TokenRecorder {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let batcher = Batcher::spawn("token recorder", MAX_BATCH, move |rows: Vec<TokenRow>| {
            let store = store.clone();
            async move {
                store.insert_tokens(&rows).await?;
                Ok(vec![(); rows.len()])
            }
        });
        TokenRecorder { batcher }
    }

    /// Records one token, returning once it is committed.
    pub async fn record(&self, row: TokenRow) -> Result<(), Arc<StoreError>> {
        self.batcher.submit(row).await
    }
}
