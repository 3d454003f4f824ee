//! The `shadowdiff` command: parses the arguments and runs one subcommand.

use std::process::ExitCode;

use shadowdiff::telemetry::{HeapStats, set_heap_stats};

/// jemalloc rather than the system allocator: glibc's keeps what the many threads of a busy proxy free in
/// per-thread arenas, so that resident memory grew to several times what was in use under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread gives memory back to the system a tenth of a second after it is
/// freed, so that the churn of large bodies does not keep the process at its peak (giving it back at once costs
/// a tenth of the throughput; after a second, the soak benchmark's peak grew by half).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0\0"[0]);

/// jemalloc's counts, refreshed on each read.
fn heap_stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(HeapStats {
        allocated: stats::allocated::read().ok()?,
        active: stats::active::read().ok()?,
        resident: stats::resident::read().ok()?,
    })
}

fn main() -> ExitCode {
    set_heap_stats(heap_stats);
    shadowdiff::cli::main()
}
