//! Work of the node that must not run on the reactor: encoding a snapshot,
//! keeping and reading back the chunks of an interrupted join. Results come
//! back to the shell as [`Done`] and go on to the core as inputs.

use crate::crdt::log::Segment;
use crate::crdt::snapshot::Image;
use crate::crdt::snapshot::Snapshot;
use crate::zo::seed::hex;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Results of work done on blocking threads.
pub(super) enum Done {
    /// A snapshot is ready to serve.
    Snapshot(Arc<Snapshot>),
    /// A chunk kept by an interrupted join.
    Kept {
        id: [u8; 32],
        index: u32,
        data: Vec<u8>,
    },
}

/// Encodes a snapshot of `image` with the log's `prefix` up to its version vector.
pub(super) fn snapshot(image: Image, prefix: Vec<Segment>, tx: mpsc::Sender<Done>) {
    tokio::task::spawn_blocking(move || {
        let s = crate::crdt::snapshot::of(&image, prefix);
        tracing::info!(chunks = s.chunks.len(), "snapshot made");
        let _ = tx.blocking_send(Done::Snapshot(Arc::new(s)));
    });
}

/// Keeps a verified chunk under `dir/snapshot/<id>/<index>`.
pub(super) fn keep_chunk(dir: &Path, id: [u8; 32], index: u32, data: Vec<u8>) {
    let d = dir.join("snapshot").join(hex(&id));
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::create_dir_all(&d)
            .and_then(|()| std::fs::write(d.join(index.to_string()), data));
    });
}

/// Removes kept chunks of every snapshot but `keep` (all when None): an
/// interrupted join resumes only the snapshot it is fetching now, and a
/// finished join leaves nothing behind.
pub(super) fn prune_chunks(dir: &Path, keep: Option<[u8; 32]>) {
    let root = dir.join("snapshot");
    let keep = keep.map(|id| hex(&id));
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for e in entries.flatten() {
            if keep.as_deref() != e.file_name().to_str() {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "stale snapshot chunks not removed");
                }
            }
        }
    });
}

/// Reads back the kept chunks of snapshot `id`.
pub(super) fn resume(dir: &Path, id: [u8; 32], chunks: usize, tx: mpsc::Sender<Done>) {
    let d = dir.join("snapshot").join(hex(&id));
    tokio::task::spawn_blocking(move || {
        for index in 0..chunks as u32 {
            if let Ok(data) = std::fs::read(d.join(index.to_string())) {
                let _ = tx.blocking_send(Done::Kept { id, index, data });
            }
        }
    });
}
