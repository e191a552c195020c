//! File I/O of one shard's log, off the shard's thread's critical path.
//!
//! On io_uring the writes and `fdatasync`s are io_uring operations through monoio's file API:
//! the shard submits them and goes on serving. monoio's epoll (legacy) driver has no
//! asynchronous file I/O: it runs `pwrite` and `fdatasync` inline on the calling thread
//! (`legacy_interest` is `None` for both), which would stall every connection of the shard
//! for the length of a disk flush. There each shard gets a writer thread fed by a channel;
//! the shard awaits its answers through a oneshot (monoio's `sync` feature wakes it across
//! threads).

use futures_channel::oneshot;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The backend chosen for the runtime the shard runs on.
pub(crate) enum Io {
    Uring(UringIo),
    Thread(ThreadIo),
}

pub(crate) struct UringIo {
    file: monoio::fs::File,
    dir: monoio::fs::File,
}

pub(crate) struct ThreadIo {
    file: Arc<File>,
    dir: Arc<File>,
    jobs: crossbeam_channel::Sender<Job>,
}

enum Job {
    Write {
        file: Arc<File>,
        buf: Vec<u8>,
        pos: u64,
        done: oneshot::Sender<(io::Result<()>, Vec<u8>)>,
    },
    Sync {
        file: Arc<File>,
        dir: Option<Arc<File>>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Remove(Vec<PathBuf>),
}

fn gone() -> io::Error {
    io::Error::other("store writer thread is gone")
}

impl Io {
    /// A backend for the current monoio runtime, writing `file` (a segment) in `dir`.
    pub fn start(shard: usize, file: File, dir: File) -> io::Result<Io> {
        if monoio::utils::is_legacy() {
            let (jobs, rx) = crossbeam_channel::unbounded();
            std::thread::Builder::new()
                .name(format!("uringmq-store-{shard}"))
                .spawn(move || writer_thread(rx))?;
            Ok(Io::Thread(ThreadIo {
                file: Arc::new(file),
                dir: Arc::new(dir),
                jobs,
            }))
        } else {
            Ok(Io::Uring(UringIo {
                file: monoio::fs::File::from_std(file)?,
                dir: monoio::fs::File::from_std(dir)?,
            }))
        }
    }

    /// Writes all of `buf` at `pos` of the current segment; gives the buffer back.
    pub async fn write(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        match self {
            Io::Uring(u) => u.file.write_all_at(buf, pos).await,
            Io::Thread(t) => {
                let (done, rx) = oneshot::channel();
                let job = Job::Write {
                    file: t.file.clone(),
                    buf,
                    pos,
                    done,
                };
                if let Err(e) = t.jobs.send(job) {
                    let Job::Write { buf, .. } = e.0 else {
                        unreachable!("sent a write")
                    };
                    return (Err(gone()), buf);
                }
                rx.await.unwrap_or_else(|_| (Err(gone()), Vec::new()))
            }
        }
    }

    /// `fdatasync` of the current segment, and `fsync` of the directory when `dir` (a new
    /// segment's name must be durable before its records count).
    pub async fn sync(&self, dir: bool) -> io::Result<()> {
        match self {
            Io::Uring(u) => {
                u.file.sync_data().await?;
                if dir {
                    u.dir.sync_all().await?;
                }
                Ok(())
            }
            Io::Thread(t) => {
                let (done, rx) = oneshot::channel();
                let job = Job::Sync {
                    file: t.file.clone(),
                    dir: dir.then(|| t.dir.clone()),
                    done,
                };
                t.jobs.send(job).map_err(|_| gone())?;
                rx.await.unwrap_or_else(|_| Err(gone()))
            }
        }
    }

    /// Makes `file` the segment written from now on. Writes and syncs already awaited are
    /// complete, so nothing is in flight on the old one.
    pub fn switch(&mut self, file: File) -> io::Result<()> {
        match self {
            Io::Uring(u) => u.file = monoio::fs::File::from_std(file)?,
            Io::Thread(t) => t.file = Arc::new(file),
        }
        Ok(())
    }

    /// Deletes old segments without waiting (an unlink of a large file can take a while).
    pub fn remove(&self, paths: Vec<PathBuf>) {
        match self {
            Io::Thread(t) => {
                let _ = t.jobs.send(Job::Remove(paths));
            }
            Io::Uring(_) => {
                let spawned = std::thread::Builder::new()
                    .name("uringmq-store-rm".into())
                    .spawn(move || remove_all(&paths));
                if let Err(e) = spawned {
                    tracing::warn!("store: cannot start a thread to delete old segments: {e}");
                }
            }
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!("store: cannot delete {}: {e}", p.display());
        }
    }
}

fn writer_thread(rx: crossbeam_channel::Receiver<Job>) {
    for job in rx {
        match job {
            Job::Write {
                file,
                buf,
                pos,
                done,
            } => {
                let r = file.write_all_at(&buf, pos);
                let _ = done.send((r, buf));
            }
            Job::Sync { file, dir, done } => {
                let r = file
                    .sync_data()
                    .and_then(|()| dir.map_or(Ok(()), |d| d.sync_all()));
                let _ = done.send(r);
            }
            Job::Remove(paths) => remove_all(&paths),
        }
    }
}
