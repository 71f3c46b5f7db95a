//! Where messages' audio lives on disk, so that opening a store costs the same with ten
//! messages or ten million (docs/configuration.md, `data_dir`):
//!
//! - `audio/<aa>/<bb>/<id>.wav`: 65,536 leaf directories chosen by a hash of the id, so no
//!   directory holds more than a few hundred files at ten million messages (a lookup in a
//!   directory of millions is slow on most file systems, and listing one is slower).
//! - `audio/incoming/`: audio written whole (a message taken over from another server, or
//!   one deposited from memory) waits here until its row commits, then moves to its leaf.
//!   So a crash leaves a stray file only here, where [`Store::open`] looks (it holds only
//!   what was being deposited), never among the stored messages.
//!
//! What else could strand a file (a crash between a row's removal and its file's) is found
//! by [`Store::sweep_audio`], a few leaves at a time from the server's upkeep, never at
//! start.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Result, Store};

/// Leaf directories: 256 × 256.
pub const LEAVES: u32 = 1 << 16;

/// Where message `id`'s audio lives in the store at `store_dir` (for tools and tests
/// that read a store from outside).
pub fn path_in(store_dir: &Path, id: &str) -> PathBuf {
    AudioDir {
        root: store_dir.join("audio"),
        incoming: PathBuf::new(),
    }
    .path(id)
}

/// The audio directory's layout.
#[derive(Debug)]
pub(crate) struct AudioDir {
    root: PathBuf,
    incoming: PathBuf,
}

impl AudioDir {
    /// The layout under `root`, made if missing; audio of a store from before the layout
    /// (`root/<id>.wav`) moved to its leaf, once.
    pub(crate) fn open(root: PathBuf) -> Result<AudioDir> {
        let incoming = root.join("incoming");
        fs::create_dir_all(&incoming)?;
        let a = AudioDir { root, incoming };
        a.migrate_flat()?;
        Ok(a)
    }

    /// The root (for the free space on its file system).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Leaf number of message `id` (FNV-1a of its bytes, folded to 16 bits).
    fn leaf_of(id: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        (h ^ (h >> 16)) & (LEAVES - 1)
    }

    fn leaf(&self, n: u32) -> PathBuf {
        self.root
            .join(format!("{:02x}", n >> 8))
            .join(format!("{:02x}", n & 0xff))
    }

    /// Where message `id`'s audio lives.
    pub(crate) fn path(&self, id: &str) -> PathBuf {
        self.leaf(Self::leaf_of(id)).join(format!("{id}.wav"))
    }

    /// Where audio written whole waits for its row.
    pub(crate) fn staged(&self, id: &str) -> PathBuf {
        self.incoming.join(format!("{id}.wav"))
    }

    /// Writes `bytes` durably to [`AudioDir::staged`] (whole, or not at all).
    pub(crate) fn stage(&self, id: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.incoming.join(format!("{id}.wav.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.staged(id))?;
        File::open(&self.incoming)?.sync_all()?;
        Ok(())
    }

    /// Moves `from` (a file in `incoming/` or a finished recording) to message `id`'s
    /// place, durably: the leaf's directory made (and its parents synced) the first
    /// time, the rename synced in both directories.
    pub(crate) fn publish(&self, id: &str, from: &Path) -> Result<()> {
        let to = self.path(id);
        let leaf = to.parent().expect("a leaf directory");
        if !leaf.is_dir() {
            fs::create_dir_all(leaf)?;
            File::open(leaf.parent().expect("a top directory"))?.sync_all()?;
            File::open(&self.root)?.sync_all()?;
        }
        fs::rename(from, &to)?;
        File::open(leaf)?.sync_all()?;
        if let Some(dir) = from.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Files left in `incoming/` by a stop: (id, path); half-written ones (`.tmp`) with
    /// an empty id, to be removed.
    pub(crate) fn left_incoming(&self) -> Result<Vec<(String, PathBuf)>> {
        list(&self.incoming)
    }

    /// Moves audio kept before the layout (`root/<id>.wav`) to its leaf. Lists only the
    /// root, which after this holds the 256 top directories and `incoming`.
    fn migrate_flat(&self) -> Result<()> {
        let mut moved = 0usize;
        for entry in fs::read_dir(&self.root)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name.strip_suffix(".wav") {
                self.publish(id, &path)?;
                moved += 1;
            } else if name.ends_with(".wav.tmp") {
                fs::remove_file(&path)?;
            }
        }
        if moved > 0 {
            tracing::info!(moved, "audio moved to the sharded layout (once)");
        }
        Ok(())
    }

    /// The files in leaf `n` (none while it does not exist yet).
    fn list_leaf(&self, n: u32) -> Result<Vec<(String, PathBuf)>> {
        list(&self.leaf(n))
    }
}

/// The files in `dir`: (id, path), for `<id>.wav`; other names with an empty id. A
/// directory not made yet holds nothing.
fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        out.push((name.strip_suffix(".wav").unwrap_or("").to_string(), path));
    }
    Ok(out)
}

/// Removes `path`; one already gone is no error (a removal repeated after a crash).
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// `path` opened to read; None when it is not there (its message deleted, its recording
/// ended meanwhile).
pub(crate) fn open_if_present(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// At most `max` of `file`'s bytes from `from` on (none when `from` is past its end), and
/// the file's length: one read at an offset, so a file's tail costs what the tail is.
pub(crate) fn read_from(file: &File, from: u64, max: u64) -> Result<(Vec<u8>, u64)> {
    use std::os::unix::fs::FileExt as _;
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; len.saturating_sub(from).min(max) as usize];
    file.read_exact_at(&mut buf, from)?;
    Ok((buf, len))
}

impl Store {
    /// Removes message `id`'s audio, if it is there.
    pub(crate) fn remove_audio(&self, id: &str) -> Result<()> {
        remove_if_present(&self.audio_path(id))
    }

    /// Looks at `leaves` leaf directories from `*cursor` on (wrapping; the cursor moves
    /// past them) and removes each file no message row names: what a crash between a
    /// row's removal and its file's left. Bounded work per call, whatever the store holds.
    /// How many files it removed.
    pub fn sweep_audio(&self, cursor: &mut u32, leaves: u32) -> Result<usize> {
        let mut removed = 0;
        for _ in 0..leaves.min(LEAVES) {
            let n = *cursor % LEAVES;
            *cursor = (n + 1) % LEAVES;
            let files = self.audio.list_leaf(n)?;
            if files.is_empty() {
                continue;
            }
            let db = self.read_db();
            let mut known = db.prepare_cached("SELECT 1 FROM messages WHERE id = ?1")?;
            let mut stray = Vec::new();
            for (id, path) in files {
                if id.is_empty() || !known.exists([&id])? {
                    stray.push(path);
                }
            }
            drop(known);
            drop(db);
            for path in stray {
                tracing::warn!(file = %path.display(), "removing audio no message names");
                remove_if_present(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// What a stop left in `incoming/`: audio whose row committed goes to its place, the
    /// rest (its deposit never committed) is removed. Only in-flight deposits are there.
    pub(crate) fn finish_incoming(&self) -> Result<()> {
        for (id, path) in self.audio.left_incoming()? {
            if !id.is_empty() && self.get(&id)?.is_some() {
                self.audio.publish(&id, &path)?;
            } else {
                tracing::warn!(file = %path.display(), "removing audio of an uncommitted deposit");
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_spread_over_the_leaves() {
        let mut count = vec![0u32; LEAVES as usize];
        for i in 0..200_000u64 {
            count[AudioDir::leaf_of(&format!(
                "ms1-{:016x}",
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )) as usize] += 1;
        }
        let max = *count.iter().max().unwrap();
        // About 3 a leaf on average: none near a crowd.
        assert!(max <= 16, "the fullest leaf holds {max}");
    }
}
