//! A traffic file read on a thread of its own, record by record, into a queue bounded in records and in bytes,
//! with the bytes read so far for progress.

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{Record, TrafficError, TrafficFormat};
use crate::seal::Opener;

/// Records read ahead at most.
const QUEUE_RECORDS: usize = 256;
/// Bytes of records read ahead at most (a record larger than this takes all of it).
const QUEUE_BYTES: usize = 16 << 20;
/// The file is read in blocks of this size.
const READ_BLOCK: usize = 256 << 10;

/// One step of the reading.
#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// The file stopped being its format here; nothing after is read.
    Broken(String),
}

enum Queued {
    Record(Record, OwnedSemaphorePermit),
    Broken(String),
}

/// A file being read in the background; dropping it stops the reading.
pub struct TrafficReader {
    records: mpsc::Receiver<Queued>,
    room: Arc<Semaphore>,
    read: Arc<AtomicU64>,
    total: u64,
}

impl TrafficReader {
    /// Opens `path` and starts reading it in `format`, sealed lines opened with `opener`. Must be called inside a
    /// tokio runtime.
    pub fn open(
        path: &Path,
        format: TrafficFormat,
        opener: Option<Arc<Opener>>,
    ) -> Result<Self, TrafficError> {
        let unreadable = |source| TrafficError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(unreadable)?;
        let total = file.metadata().map_err(unreadable)?.len();
        let read = Arc::new(AtomicU64::new(0));
        let (sender, records) = mpsc::channel(QUEUE_RECORDS);
        let room = Arc::new(Semaphore::new(QUEUE_BYTES));
        let runtime = tokio::runtime::Handle::current();
        let counted = Counted {
            inner: file,
            read: read.clone(),
        };
        let thread_room = room.clone();
        std::thread::Builder::new()
            .name("traffic-reader".into())
            .spawn(move || {
                let reader = BufReader::with_capacity(READ_BLOCK, counted);
                let mut sink = |record: Record| {
                    let bytes = record.size().clamp(1, QUEUE_BYTES);
                    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
                    let Ok(permit) =
                        runtime.block_on(thread_room.clone().acquire_many_owned(permits))
                    else {
                        return ControlFlow::Break(());
                    };
                    match sender.blocking_send(Queued::Record(record, permit)) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    }
                };
                if let Err(reason) =
                    super::read_records(reader, format, &mut sink, opener.as_deref())
                {
                    let _ = sender.blocking_send(Queued::Broken(reason));
                }
            })
            .map_err(unreadable)?;
        Ok(Self {
            records,
            room,
            read,
            total,
        })
    }

    /// The next record, or where the file broke; `None` at its end.
    pub async fn next(&mut self) -> Option<Next> {
        match self.records.recv().await? {
            // The permit goes here: the record leaves the queue's bound for its taker's.
            Queued::Record(record, _permit) => Some(Next::Record(record)),
            Queued::Broken(reason) => Some(Next::Broken(reason)),
        }
    }

    /// Bytes of the file read so far (shared, for a progress display).
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    /// The file's size when it was opened.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}

impl Drop for TrafficReader {
    fn drop(&mut self) {
        // A reading thread waiting for room gives up.
        self.room.close();
    }
}

/// The file, counting what is read from it.
struct Counted {
    inner: File,
    read: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}
