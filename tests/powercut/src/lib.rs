//! A crash-simulating filesystem for the fault suite: what a power cut does
//! to a disk, on command.
//!
//! `CrashDisk::mount(at)` mounts a FUSE filesystem at `at` whose contents
//! live in this process (`model`): every write, create, rename, unlink and
//! truncate is visible at once but stays volatile until it is synced. A
//! file's `fsync`/`fdatasync` makes its contents durable; a directory's
//! `fsync` makes its entries durable (the strict model of LazyFS: a new file
//! whose directory was never synced is gone after a cut, a rename not followed
//! by a directory sync is undone). `power_cut` unmounts (the processes using
//! it must be dead: kill -9 first), throws away everything not synced and
//! mounts again, so the next process finds exactly what a real disk would
//! have kept. No kernel cache survives: the remount drops it.
//!
//! The durable image is kept in memory, not passed through to a backing
//! directory as each sync happens: mirroring it by path would need the same
//! bookkeeping and add the real filesystem's own ordering to the model.
//! `load` starts from a directory's tree and `save` writes the durable image
//! out (for inspection after a test, or to open a store without FUSE).
//!
//! `POWERCUT_TRACE=1` prints, at every cut, each file's live and durable
//! size and each directory's live and durable entries.
//!
//! Owns nothing of citysense: it knows files and directories, not stores.

mod fuse;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use model::Model;
pub use model::Unsynced;

/// A mounted crash-simulating filesystem; unmounted when dropped.
pub struct CrashDisk {
    model: Arc<Mutex<Model>>,
    at: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

/// Linux's errno for a connection aborted (no libc dependency for one constant).
const ECONNABORTED: i32 = 103;

impl CrashDisk {
    /// Mounts an empty filesystem at `at` (an existing, empty directory).
    pub fn mount(at: &Path) -> std::io::Result<CrashDisk> {
        CrashDisk::mount_model(Model::default(), at)
    }

    /// Mounts a filesystem holding the tree at `image` (synced: a cut keeps it).
    pub fn load(image: &Path, at: &Path) -> std::io::Result<CrashDisk> {
        CrashDisk::mount_model(Model::load(image)?, at)
    }

    fn mount_model(model: Model, at: &Path) -> std::io::Result<CrashDisk> {
        let mut disk = CrashDisk { model: Arc::new(Mutex::new(model)), at: at.to_path_buf(), session: None };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("citysense-powercut".into()), fuser::MountOption::RW];
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(fuse::Fs(self.model.clone()), &self.at, &config)
            .map_err(|e| std::io::Error::new(e.kind(), format!("mounting the crash disk at {}: {e}", self.at.display())))?;
        self.session = Some(session);
        Ok(())
    }

    fn detach(&mut self) -> std::io::Result<()> {
        let Some(s) = self.session.take() else { return Ok(()) };
        match s.umount_and_join() {
            Ok(()) => Ok(()),
            // The kernel ends the FUSE connection on unmount; a session thread
            // caught reading at that moment can see ECONNABORTED where it
            // usually sees ENODEV (fuser treats only the latter as the end).
            // Either way the disk is gone and the model untouched: a clean end,
            // once the mount table agrees.
            Err(e) if e.raw_os_error() == Some(ECONNABORTED) && !self.mounted() => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), format!("unmounting the crash disk at {}: {e} (is a process still using it? kill it before the cut)", self.at.display()))),
        }
    }

    /// Whether the mount table still lists this disk.
    fn mounted(&self) -> bool {
        let at = self.at.canonicalize().unwrap_or_else(|_| self.at.clone());
        std::fs::read_to_string("/proc/self/mountinfo").map(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(&*at.to_string_lossy()))).unwrap_or(true)
    }

    /// What a power cut now would throw away.
    pub fn unsynced(&self) -> Unsynced {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).unsynced()
    }

    /// Power cut and power back: unmount, drop everything not synced, mount
    /// again. Returns what was dropped. Kill every process using the disk first.
    pub fn power_cut(&mut self) -> std::io::Result<Unsynced> {
        self.detach()?;
        let lost = self.model.lock().unwrap_or_else(|p| p.into_inner()).cut();
        self.attach()?;
        Ok(lost)
    }

    /// Writes the durable image into `dir` (created, must not exist yet).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.model.lock().unwrap_or_else(|p| p.into_inner()).save(dir)
    }

    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for CrashDisk {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("{e}");
        }
    }
}
