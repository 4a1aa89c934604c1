//! Sampled token ids on their way to the host. The copy is queued when the read starts, behind
//! the step that samples them, so the engine can queue the next step before it waits: the GPU
//! then runs that step while the host schedules the one after.
use std::future::Future;
use std::pin::Pin;

use burn::tensor::TensorData;

type DataFuture = Pin<Box<dyn Future<Output = Result<TensorData, String>> + Send>>;

pub struct PendingIds(DataFuture);

impl PendingIds {
    /// Ids already on the host (backends that compute in place, such as ndarray).
    pub fn ready(data: TensorData) -> Self {
        Self(Box::pin(std::future::ready(Ok(data))))
    }

    /// Ids a device is still copying; `copy` resolves when the copy is done.
    pub fn copying(
        copy: impl Future<Output = Result<TensorData, String>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(copy))
    }

    /// Blocks until the ids are on the host.
    pub fn wait(self) -> Result<Vec<u32>, String> {
        let data = cubecl::future::block_on(self.0)?;
        let ids = data
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| format!("sampled ids: {e:?}"))?;
        Ok(ids.into_iter().map(|t| t as u32).collect())
    }
}
