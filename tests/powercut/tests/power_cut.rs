//! The crash disk through the kernel: real files, real fsyncs, a cut.
//! Needs root (or fusermount3) and /dev/fuse, as the fault suite does.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use powercut::{CrashDisk, Unsynced};

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn disk() -> (tempfile::TempDir, CrashDisk) {
    let dir = tempfile::tempdir().unwrap();
    let disk = CrashDisk::mount(dir.path()).unwrap();
    (dir, disk)
}

#[test]
fn a_write_never_fsynced_is_gone_after_a_cut() {
    let (_dir, mut disk) = disk();
    let at = disk.path().to_path_buf();
    let mut f = File::create(at.join("log")).unwrap();
    f.write_all(b"synced").unwrap();
    f.sync_all().unwrap();
    sync_dir(&at);
    f.write_all(b" and not").unwrap();
    drop(f);
    fs::write(at.join("new"), b"never named durably").unwrap();
    assert_eq!(fs::read(at.join("log")).unwrap(), b"synced and not", "before the cut, every write is visible");
    assert_eq!(disk.unsynced(), Unsynced { files: 2, dirs: 1 });
    assert_eq!(disk.power_cut().unwrap(), Unsynced { files: 2, dirs: 1 });
    assert_eq!(fs::read(at.join("log")).unwrap(), b"synced");
    assert!(!at.join("new").exists(), "a file whose directory was never synced is gone");
}

#[test]
fn a_write_fsynced_with_its_directory_is_kept() {
    let (_dir, mut disk) = disk();
    let at = disk.path().to_path_buf();
    fs::create_dir(at.join("sub")).unwrap();
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(at.join("sub/data")).unwrap();
    f.write_all(&vec![7u8; 100_000]).unwrap();
    f.set_len(50_001).unwrap();
    f.sync_data().unwrap();
    sync_dir(&at.join("sub"));
    sync_dir(&at);
    drop(f);
    assert_eq!(disk.unsynced(), Unsynced::default());
    disk.power_cut().unwrap();
    assert_eq!(fs::read(at.join("sub/data")).unwrap(), vec![7u8; 50_001]);
    // And again: nothing is lost by a cut with nothing unsynced.
    disk.power_cut().unwrap();
    assert_eq!(fs::read(at.join("sub/data")).unwrap().len(), 50_001);
}

#[test]
fn a_rename_without_a_directory_fsync_comes_back_under_its_old_name() {
    let (_dir, mut disk) = disk();
    let at = disk.path().to_path_buf();
    for (name, body) in [("current", "old"), ("current.tmp", "new")] {
        let mut f = File::create(at.join(name)).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    sync_dir(&at);
    fs::rename(at.join("current.tmp"), at.join("current")).unwrap();
    disk.power_cut().unwrap();
    assert_eq!(fs::read_to_string(at.join("current")).unwrap(), "old");
    assert_eq!(fs::read_to_string(at.join("current.tmp")).unwrap(), "new");

    fs::rename(at.join("current.tmp"), at.join("current")).unwrap();
    sync_dir(&at);
    disk.power_cut().unwrap();
    assert_eq!(fs::read_to_string(at.join("current")).unwrap(), "new");
    assert!(!at.join("current.tmp").exists());
}

#[test]
fn the_durable_image_saves_and_loads() {
    let (_dir, disk) = disk();
    let at = disk.path().to_path_buf();
    let mut f = File::create(at.join("kept")).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync_all().unwrap();
    sync_dir(&at);
    fs::write(at.join("volatile"), b"x").unwrap();
    let image = tempfile::tempdir().unwrap();
    disk.save(&image.path().join("img")).unwrap();
    drop(f);
    drop(disk);
    assert_eq!(fs::read_dir(image.path().join("img")).unwrap().count(), 1);
    let second = tempfile::tempdir().unwrap();
    let mut again = CrashDisk::load(&image.path().join("img"), second.path()).unwrap();
    again.power_cut().unwrap();
    assert_eq!(fs::read(second.path().join("kept")).unwrap(), b"kept");
}
