//! The shadow lane: threads of their own, at a lower scheduling priority, that carry every piece of shadow work
//! (shadow requests, capture of their answers, analysis, the store writer), handed over from the caller's path
//! without a lock and never waited for.
//!
//! Each lane thread drives a single-threaded runtime whose root future reads the lane's intake queue. A caller's
//! thread pushes onto that queue (atomics only) and wakes the root future, which costs an atomic flag and an
//! eventfd write: nothing a descheduled shadow thread can hold. Everything the caller's path gives the lane
//! (new exchanges, the responder's captured body, a dropped report channel) goes through the intake, so no
//! caller thread ever wakes a shadow task directly (that would take the lane runtime's queue lock).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// The scheduling class of the shadow threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowScheduling {
    /// `SCHED_BATCH` at the lane's nice value: a waking caller's thread is preferred, and shadow work keeps a
    /// share of the CPU when the callers use it all.
    Batch,
    /// `SCHED_IDLE`: shadow work runs only on CPU time no other thread wants (a niced one included, so a busy
    /// neighbouring process starves it too); a waking caller's thread always preempts it at once, and at
    /// saturation nearly every exchange is shed (counted).
    Idle,
}

impl ShadowScheduling {
    #[cfg(target_os = "linux")]
    fn policy(self) -> libc::c_int {
        match self {
            Self::Batch => libc::SCHED_BATCH,
            Self::Idle => libc::SCHED_IDLE,
        }
    }
}

/// How shadow work is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneSettings {
    /// Threads that send shadow requests and assemble exchanges, each with its own event loop; `None` for one
    /// per core (the count of cores handed to [`Lane::start`]).
    pub threads: Option<usize>,
    /// The nice value of every shadow thread (0, as the callers' threads, to 19, the lowest priority).
    pub nice: i32,
    /// The scheduling class of every shadow thread.
    pub scheduling: ShadowScheduling,
}

impl LaneSettings {
    pub const DEFAULT_NICE: i32 = 5;

    /// Lane threads to start: as configured, or `one_per_core`. The count of cores is resolved where the app is
    /// built, so that the lane reads no other room.
    pub fn thread_count(&self, one_per_core: usize) -> usize {
        self.threads.unwrap_or(one_per_core).max(1)
    }
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self {
            threads: None,
            nice: Self::DEFAULT_NICE,
            scheduling: ShadowScheduling::Batch,
        }
    }
}

thread_local! {
    /// The index of the lane thread running here, if this is one.
    static LANE_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which lane thread this code runs on (`None` off the lane): each keeps connection pools of its own, so that a
/// connection is driven by the thread that sends on it.
pub fn current_thread_index() -> Option<usize> {
    LANE_THREAD.with(Cell::get)
}

/// Work handed to a lane thread: runs there, and may spawn tasks onto its runtime.
type Job = Box<dyn FnOnce() + Send>;

/// After the intake closes, how long a lane runtime gives its remaining blocking work (an analysis in progress)
/// before it is left to end on its own.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The lane: its threads' intakes and runtimes.
pub struct Lane {
    intakes: Vec<mpsc::UnboundedSender<Job>>,
    handles: Vec<Handle>,
    /// Round-robin over the threads.
    next: AtomicUsize,
    /// The shadow tasks spawned through [`Lane::spawn`], so that shutdown can wait for them.
    tasks: TaskTracker,
}

/// The name every lane thread carries (with its number); its blocking threads are [`BLOCKING_THREAD_NAME`].
pub const THREAD_NAME: &str = "shadow-lane";
/// The name of the threads a lane runs blocking work on (the analysis).
pub const BLOCKING_THREAD_NAME: &str = "shadow-work";

impl Lane {
    /// Starts the lane's threads. The intake of each is unbounded in type, but every job on it belongs to an
    /// exchange that was admitted under `--max-shadow-inflight` and `--memory-budget`, which bound them.
    /// `one_per_core` is the thread count when `settings` configure none.
    pub fn start(settings: &LaneSettings, one_per_core: usize) -> io::Result<Arc<Self>> {
        let count = settings.thread_count(one_per_core);
        let nice = settings.nice.clamp(0, 19);
        let scheduling = settings.scheduling;
        let mut intakes = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .thread_name(BLOCKING_THREAD_NAME)
                .on_thread_start(move || lower_priority(scheduling, nice))
                .build()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            handles.push(runtime.handle().clone());
            intakes.push(tx);
            std::thread::Builder::new()
                .name(format!("{THREAD_NAME}-{index}"))
                .spawn(move || {
                    lower_priority(scheduling, nice);
                    LANE_THREAD.with(|lane| lane.set(Some(index)));
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            job();
                        }
                    });
                    runtime.shutdown_timeout(SHUTDOWN_WAIT);
                })?;
        }
        Ok(Arc::new(Self {
            intakes,
            handles,
            next: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
        }))
    }

    /// Runs `job` on a lane thread, without waiting. Dropped if the lane has stopped.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.intakes.len();
        // A closed intake hands the job back; dropping it here is all there is left to do.
        let _ = self.intakes[index].send(Box::new(job));
    }

    /// Spawns a shadow task on a lane thread, tracked for shutdown from this moment (an atomic increment), not
    /// from when the lane thread gets to it: shutdown must not find nothing to wait for while the task is still
    /// in the intake.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let task = self.tasks.track_future(task);
        self.run(move || {
            tokio::spawn(task);
        });
    }

    /// Spawns a long-lived stage (analysis, the writer) on lane thread `index` (modulo their number). Only for
    /// start-up: it wakes the lane's runtime directly.
    pub fn spawn_stage<F>(&self, index: usize, stage: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index % self.handles.len()].spawn(stage)
    }

    /// The shadow tasks spawned so far, to be waited for at shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Number of lane threads.
    pub fn threads(&self) -> usize {
        self.intakes.len()
    }
}

/// The sending half of a one-shot channel from the caller's path to a shadow task: sending it (or dropping it
/// unsent) happens on the lane, so the waiting task is woken from its own thread.
pub struct Handoff<T: Send + 'static> {
    tx: Option<oneshot::Sender<T>>,
    lane: Arc<Lane>,
}

impl<T: Send + 'static> Handoff<T> {
    pub fn channel(lane: &Arc<Lane>) -> (Self, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        let handoff = Self {
            tx: Some(tx),
            lane: lane.clone(),
        };
        (handoff, rx)
    }

    /// Whether the receiving task has given up (dropping the sender then wakes nobody).
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// Ready once the receiving task has given up; registers the caller's waker until then (the receiving
    /// task's side wakes it, never the other way round).
    pub fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.tx.as_mut() {
            Some(tx) => tx.poll_closed(cx),
            None => std::task::Poll::Ready(()),
        }
    }

    pub fn send(mut self, value: T) {
        if let Some(tx) = self.tx.take()
            && !tx.is_closed()
        {
            self.lane.run(move || {
                let _ = tx.send(value);
            });
        }
    }
}

impl<T: Send + 'static> Drop for Handoff<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take()
            && !tx.is_closed()
        {
            self.lane.run(move || drop(tx));
        }
    }
}

/// Moves the calling thread to the batch scheduling class (waking, it does not preempt a running thread) at
/// `nice`, or to the idle class, so that a caller's thread runs first. Threads inherit this from the thread
/// that starts them.
#[cfg(target_os = "linux")]
fn lower_priority(scheduling: ShadowScheduling, nice: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread (pid 0), with a valid parameter.
    let (policy, priority) = unsafe {
        (
            libc::sched_setscheduler(0, scheduling.policy(), &param),
            libc::setpriority(libc::PRIO_PROCESS, 0, nice),
        )
    };
    if policy != 0 || priority != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "could not lower a shadow thread's scheduling priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_scheduling: ShadowScheduling, _nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_tasks_run_on_lane_threads() {
        let lane = Lane::start(
            &LaneSettings {
                threads: Some(2),
                nice: 5,
                scheduling: ShadowScheduling::Batch,
            },
            2,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            lane.spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                tx.send(name).unwrap();
            });
        }
        for _ in 0..4 {
            let name = rx.recv().unwrap().unwrap();
            assert!(name.starts_with(THREAD_NAME), "{name}");
        }
    }

    #[test]
    fn a_handoff_delivers_and_a_dropped_one_closes() {
        let lane = Lane::start(
            &LaneSettings {
                threads: Some(1),
                nice: 0,
                scheduling: ShadowScheduling::Batch,
            },
            2,
        )
        .unwrap();
        let runtime = Builder::new_current_thread().build().unwrap();
        let (sent, received) = Handoff::channel(&lane);
        sent.send(7);
        assert_eq!(runtime.block_on(received).unwrap(), 7);
        let (dropped, received) = Handoff::<u8>::channel(&lane);
        drop(dropped);
        assert!(runtime.block_on(received).is_err());
    }
}
