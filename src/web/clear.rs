//! Clearing a run: the run this process writes is started again before the clear is answered, so that what
//! follows the answer is kept.

use crate::clock::now_ms;
use crate::store::{RunInfo, StoreError};
use crate::web::AdminState;

/// Deletes `run` and everything counted for it. When it is the run this process writes, it is started again
/// under its label in the same transaction, and the writer told before this returns: what the writer held
/// from before is dropped (counted as `run_deleted`), what arrives after is stored. Other replicas writing it
/// learn of the clear at their next write.
pub(crate) async fn clear_run(state: &AdminState, run: &RunInfo) -> Result<(), StoreError> {
    if let Some(runs) = &state.runs
        && runs.current().label == run.label
    {
        let now = now_ms();
        if let Some(id) = state.store.clear_run(run.id, now).await? {
            runs.restarted(id, now);
        }
        return Ok(());
    }
    state.store.delete_run(run.id).await?;
    Ok(())
}
