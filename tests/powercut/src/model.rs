//! The filesystem as two images in memory: `live`, what processes see, and
//! `durable`, what survives a power cut. Every operation changes `live` only;
//! the two syncs are the only ways anything reaches `durable`:
//!
//! - `fsync` of a file copies that file's contents (and size) to `durable`;
//! - `fsync` of a directory copies that directory's entries (names → inodes)
//!   to `durable`. A file named there whose data was never synced is durable
//!   as an empty file, a directory as an empty one.
//!
//! A cut makes `durable` the new `live`, keeping what is reachable from the
//! root. So a create, rename or unlink is lost unless its directory was
//! synced afterwards, and a write unless its file was (the strict model of
//! LazyFS, stricter than ext4's in practice). Nothing is torn: each sync is
//! atomic, which a disk with power-loss protection also gives per sector.
//!
//! File contents are pages shared between the two images (copy on write), so
//! a sync costs a copy of the page table, not of the data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub type Ino = u64;
pub const ROOT: Ino = 1;
const PAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Invalid,
}

/// A file's contents: sparse pages, zero beyond `len` and in holes.
#[derive(Clone, Default)]
pub struct Data {
    pages: BTreeMap<u64, Arc<[u8; PAGE]>>,
    len: u64,
}

impl Data {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn write(&mut self, offset: u64, buf: &[u8]) {
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let (index, at) = (pos / PAGE as u64, (pos % PAGE as u64) as usize);
            let n = rest.len().min(PAGE - at);
            let page = self.pages.entry(index).or_insert_with(|| Arc::new([0; PAGE]));
            Arc::make_mut(page)[at..at + n].copy_from_slice(&rest[..n]);
            pos += n as u64;
            rest = &rest[n..];
        }
        self.len = self.len.max(offset + buf.len() as u64);
    }

    pub fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let (index, at) = (pos / PAGE as u64, (pos % PAGE as u64) as usize);
            let n = ((end - pos) as usize).min(PAGE - at);
            if let Some(page) = self.pages.get(&index) {
                let from = (pos - offset) as usize;
                out[from..from + n].copy_from_slice(&page[at..at + n]);
            }
            pos += n as u64;
        }
        out
    }

    /// Shrinks (zeroing the cut part of the last page, so a later growth reads
    /// zeros) or grows with a hole.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.pages.split_off(&len.div_ceil(PAGE as u64));
            let at = (len % PAGE as u64) as usize;
            if at != 0 {
                if let Some(page) = self.pages.get_mut(&(len / PAGE as u64)) {
                    Arc::make_mut(page)[at..].fill(0);
                }
            }
        }
        self.len = len;
    }

    /// The same contents, by sharing: what a sync left and nothing since.
    fn same(&self, other: &Data) -> bool {
        self.len == other.len && self.pages.len() == other.pages.len() && self.pages.iter().zip(&other.pages).all(|((i, a), (j, b))| i == j && Arc::ptr_eq(a, b))
    }
}

#[derive(Clone)]
pub enum Body {
    File(Data),
    Dir(BTreeMap<OsString, Ino>),
}

#[derive(Clone)]
pub struct Node {
    pub body: Body,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

impl Node {
    fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Node {
        Node { body, perm, uid, gid, mtime: SystemTime::now() }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    fn entries(&self) -> Result<&BTreeMap<OsString, Ino>, Error> {
        match &self.body {
            Body::Dir(e) => Ok(e),
            Body::File(_) => Err(Error::NotDir),
        }
    }

    /// The same node with what was never synced left out: a file's data, a
    /// directory's entries.
    fn hollow(&self) -> Node {
        let body = match self.body {
            Body::File(_) => Body::File(Data::default()),
            Body::Dir(_) => Body::Dir(BTreeMap::new()),
        };
        Node { body, ..self.clone() }
    }
}

/// What a power cut throws away (or would, now): files whose contents and
/// directories whose entries differ from their durable image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unsynced {
    pub files: u64,
    pub dirs: u64,
}

pub struct Model {
    live: HashMap<Ino, Node>,
    durable: HashMap<Ino, Node>,
    /// Open handles per file: an unlinked file lives on while one is open.
    open: HashMap<Ino, u32>,
    next: Ino,
}

impl Default for Model {
    fn default() -> Self {
        let root = Node::new(Body::Dir(BTreeMap::new()), 0o755, 0, 0);
        Model { live: HashMap::from([(ROOT, root.clone())]), durable: HashMap::from([(ROOT, root)]), open: HashMap::new(), next: ROOT + 1 }
    }
}

impl Model {
    pub fn node(&self, ino: Ino) -> Result<&Node, Error> {
        self.live.get(&ino).ok_or(Error::NotFound)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Error> {
        self.live.get_mut(&ino).ok_or(Error::NotFound)
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut BTreeMap<OsString, Ino>, Error> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir(e) => Ok(e),
            Body::File(_) => Err(Error::NotDir),
        }
    }

    fn data_mut(&mut self, ino: Ino) -> Result<&mut Data, Error> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.body {
            Body::File(d) => Ok(d),
            Body::Dir(_) => Err(Error::IsDir),
        }
    }

    pub fn lookup(&self, dir: Ino, name: &OsStr) -> Result<Ino, Error> {
        self.node(dir)?.entries()?.get(name).copied().ok_or(Error::NotFound)
    }

    pub fn entries(&self, dir: Ino) -> Result<Vec<(OsString, Ino)>, Error> {
        Ok(self.node(dir)?.entries()?.iter().map(|(n, i)| (n.clone(), *i)).collect())
    }

    /// A new empty file (or directory) named `name` in `dir`.
    pub fn create(&mut self, dir: Ino, name: &OsStr, is_dir: bool, perm: u16, uid: u32, gid: u32) -> Result<Ino, Error> {
        if self.entries_mut(dir)?.contains_key(name) {
            return Err(Error::Exists);
        }
        let ino = self.next;
        self.next += 1;
        let body = if is_dir { Body::Dir(BTreeMap::new()) } else { Body::File(Data::default()) };
        self.live.insert(ino, Node::new(body, perm, uid, gid));
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// `unlink` (`is_dir` false) or `rmdir` (true).
    pub fn remove(&mut self, dir: Ino, name: &OsStr, is_dir: bool) -> Result<(), Error> {
        let ino = self.lookup(dir, name)?;
        let node = self.node(ino)?;
        match (is_dir, node.is_dir()) {
            (false, true) => return Err(Error::IsDir),
            (true, false) => return Err(Error::NotDir),
            (true, true) if !node.entries()?.is_empty() => return Err(Error::NotEmpty),
            _ => {}
        }
        self.entries_mut(dir)?.remove(name);
        self.forget_if_gone(ino);
        Ok(())
    }

    pub fn rename(&mut self, dir: Ino, name: &OsStr, to_dir: Ino, to_name: &OsStr, no_replace: bool) -> Result<(), Error> {
        let ino = self.lookup(dir, name)?;
        self.node(to_dir)?.entries()?;
        if self.node(ino)?.is_dir() && self.within(to_dir, ino) {
            return Err(Error::Invalid);
        }
        let replaced = match self.lookup(to_dir, to_name) {
            Ok(same) if same == ino => return Ok(()),
            Ok(_) if no_replace => return Err(Error::Exists),
            Ok(other) => {
                let (from, over) = (self.node(ino)?, self.node(other)?);
                match (from.is_dir(), over.is_dir()) {
                    (false, true) => return Err(Error::IsDir),
                    (true, false) => return Err(Error::NotDir),
                    (true, true) if !over.entries()?.is_empty() => return Err(Error::NotEmpty),
                    _ => Some(other),
                }
            }
            Err(_) => None,
        };
        self.entries_mut(dir)?.remove(name);
        self.entries_mut(to_dir)?.insert(to_name.to_owned(), ino);
        if let Some(other) = replaced {
            self.forget_if_gone(other);
        }
        Ok(())
    }

    /// Whether `ino` is `top` or below it.
    fn within(&self, ino: Ino, top: Ino) -> bool {
        let mut todo = vec![top];
        while let Some(d) = todo.pop() {
            if d == ino {
                return true;
            }
            if let Some(Node { body: Body::Dir(e), .. }) = self.live.get(&d) {
                todo.extend(e.values());
            }
        }
        false
    }

    pub fn write(&mut self, ino: Ino, offset: u64, buf: &[u8]) -> Result<(), Error> {
        self.data_mut(ino)?.write(offset, buf);
        Ok(())
    }

    pub fn read(&self, ino: Ino, offset: u64, size: usize) -> Result<Vec<u8>, Error> {
        match &self.node(ino)?.body {
            Body::File(d) => Ok(d.read(offset, size)),
            Body::Dir(_) => Err(Error::IsDir),
        }
    }

    pub fn set_len(&mut self, ino: Ino, len: u64) -> Result<(), Error> {
        self.data_mut(ino)?.set_len(len);
        Ok(())
    }

    pub fn set_perm(&mut self, ino: Ino, perm: u16) -> Result<(), Error> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    pub fn open(&mut self, ino: Ino) -> Result<(), Error> {
        self.node(ino)?;
        *self.open.entry(ino).or_default() += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: Ino) {
        if let Some(n) = self.open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&ino);
                self.forget_if_gone(ino);
            }
        }
    }

    /// Drops a node no directory names and no handle holds.
    fn forget_if_gone(&mut self, ino: Ino) {
        let named = ino == ROOT || self.live.values().any(|n| matches!(&n.body, Body::Dir(e) if e.values().any(|i| *i == ino)));
        if !named && !self.open.contains_key(&ino) {
            self.live.remove(&ino);
        }
    }

    /// fsync / fdatasync: a file's contents, or a directory's entries, become durable.
    pub fn sync(&mut self, ino: Ino) -> Result<(), Error> {
        let node = self.node(ino)?.clone();
        if let Body::Dir(entries) = &node.body {
            for child in entries.values() {
                if !self.durable.contains_key(child) {
                    let hollow = self.node(*child)?.hollow();
                    self.durable.insert(*child, hollow);
                }
            }
        }
        self.durable.insert(ino, node);
        Ok(())
    }

    /// What a cut would throw away now.
    pub fn unsynced(&self) -> Unsynced {
        let mut u = Unsynced::default();
        for ino in reachable(&self.live) {
            let live = &self.live[&ino];
            match (&live.body, self.durable.get(&ino).map(|n| &n.body)) {
                (Body::File(a), Some(Body::File(b))) if a.same(b) => {}
                (Body::Dir(a), Some(Body::Dir(b))) if a == b => {}
                (Body::File(_), _) => u.files += 1,
                (Body::Dir(_), _) => u.dirs += 1,
            }
        }
        u
    }

    /// The power cut: `live` becomes what was durable. No handle survives it.
    pub fn cut(&mut self) -> Unsynced {
        let lost = self.unsynced();
        if std::env::var_os("POWERCUT_TRACE").is_some() {
            for (ino, n) in &self.live {
                let d = self.durable.get(ino);
                match (&n.body, d.map(|d| &d.body)) {
                    (Body::File(a), Some(Body::File(b))) => eprintln!("cut: file {ino} live {} durable {}", a.len(), b.len()),
                    (Body::File(a), _) => eprintln!("cut: file {ino} live {} never synced", a.len()),
                    (Body::Dir(a), Some(Body::Dir(b))) => eprintln!("cut: dir {ino} live {a:?} durable {b:?}"),
                    (Body::Dir(a), _) => eprintln!("cut: dir {ino} live {a:?} never synced"),
                }
            }
        }
        let keep = reachable(&self.durable);
        self.durable.retain(|ino, _| keep.contains(ino));
        self.live = self.durable.clone();
        self.open.clear();
        lost
    }

    /// A model whose live and durable images are the tree at `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Model> {
        let mut m = Model::default();
        m.load_into(ROOT, dir)?;
        m.durable = m.live.clone();
        Ok(m)
    }

    fn load_into(&mut self, at: Ino, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let meta = e.metadata()?;
            let perm = (meta.permissions().mode() & 0o7777) as u16;
            let ino = self.create(at, &e.file_name(), meta.is_dir(), perm, 0, 0).map_err(|err| std::io::Error::other(format!("{}: {err:?}", e.path().display())))?;
            if meta.is_dir() {
                self.load_into(ino, &e.path())?;
            } else {
                self.data_mut(ino).expect("just created").write(0, &std::fs::read(e.path())?);
            }
        }
        Ok(())
    }

    /// Writes the durable image into `dir` (which must be empty): what a
    /// power cut now would leave on the disk.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        self.save_from(ROOT, dir)
    }

    fn save_from(&self, at: Ino, dir: &Path) -> std::io::Result<()> {
        let Some(Node { body: Body::Dir(entries), .. }) = self.durable.get(&at) else { return Ok(()) };
        for (name, ino) in entries {
            let path = dir.join(name);
            match self.durable.get(ino).map(|n| &n.body) {
                Some(Body::Dir(_)) => {
                    std::fs::create_dir(&path)?;
                    self.save_from(*ino, &path)?;
                }
                Some(Body::File(d)) => std::fs::write(&path, d.read(0, d.len() as usize))?,
                None => {}
            }
        }
        Ok(())
    }
}

/// The inodes reachable from the root through directory entries.
fn reachable(image: &HashMap<Ino, Node>) -> HashSet<Ino> {
    let mut seen = HashSet::new();
    let mut todo = vec![ROOT];
    while let Some(ino) = todo.pop() {
        if !seen.insert(ino) {
            continue;
        }
        if let Some(Node { body: Body::Dir(e), .. }) = image.get(&ino) {
            todo.extend(e.values().copied().filter(|i| image.contains_key(i)));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(m: &mut Model, dir: Ino, n: &str, body: &[u8]) -> Ino {
        let ino = m.create(dir, name(n), false, 0o644, 0, 0).unwrap();
        m.write(ino, 0, body).unwrap();
        ino
    }

    fn content(m: &Model, dir: Ino, n: &str) -> Option<Vec<u8>> {
        let ino = m.lookup(dir, name(n)).ok()?;
        m.read(ino, 0, 1 << 20).ok()
    }

    #[test]
    fn pages_hold_data_across_boundaries_and_truncation_zeroes_the_tail() {
        let mut d = Data::default();
        d.write(4090, &[7; 20]);
        assert_eq!(d.len(), 4110);
        assert_eq!(d.read(0, 4), vec![0; 4], "a hole reads as zeros");
        assert_eq!(d.read(4088, 100), [&[0, 0][..], &[7; 20][..]].concat());
        d.set_len(4095);
        d.set_len(5000);
        assert_eq!(d.read(4090, 10), [&[7; 5][..], &[0; 5][..]].concat(), "bytes cut by a shrink come back as zeros");
    }

    #[test]
    fn a_created_file_needs_its_data_and_its_directory_synced() {
        let mut m = Model::default();
        let a = file(&mut m, ROOT, "a", b"hello");
        m.sync(a).unwrap();
        assert_eq!(m.unsynced(), Unsynced { files: 0, dirs: 1 });
        m.cut();
        assert_eq!(content(&m, ROOT, "a"), None, "the name was never synced");

        let a = file(&mut m, ROOT, "a", b"hello");
        m.sync(ROOT).unwrap();
        m.cut();
        assert_eq!(content(&m, ROOT, "a"), Some(vec![]), "named, but the data was never synced");
        m.write(a, 0, b"hello").unwrap();
        m.sync(a).unwrap();
        m.write(a, 5, b" world").unwrap();
        m.cut();
        assert_eq!(content(&m, ROOT, "a").unwrap(), b"hello");
    }

    #[test]
    fn a_rename_and_an_unlink_are_undone_unless_the_directory_is_synced() {
        let mut m = Model::default();
        let old = file(&mut m, ROOT, "f", b"old");
        let new = file(&mut m, ROOT, "f.tmp", b"new");
        m.sync(old).unwrap();
        m.sync(new).unwrap();
        m.sync(ROOT).unwrap();
        m.rename(ROOT, name("f.tmp"), ROOT, name("f"), false).unwrap();
        assert_eq!(content(&m, ROOT, "f").unwrap(), b"new");
        m.cut();
        assert_eq!(content(&m, ROOT, "f").unwrap(), b"old");
        assert_eq!(content(&m, ROOT, "f.tmp").unwrap(), b"new");
        m.rename(ROOT, name("f.tmp"), ROOT, name("f"), false).unwrap();
        m.sync(ROOT).unwrap();
        m.remove(ROOT, name("f"), false).unwrap();
        m.cut();
        assert_eq!(content(&m, ROOT, "f").unwrap(), b"new");
        assert_eq!(m.entries(ROOT).unwrap().len(), 1);
    }

    #[test]
    fn a_subdirectory_is_durable_only_through_its_parent_and_itself() {
        let mut m = Model::default();
        let d = m.create(ROOT, name("d"), true, 0o755, 0, 0).unwrap();
        let f = file(&mut m, d, "x", b"1");
        m.sync(f).unwrap();
        m.sync(d).unwrap();
        m.cut();
        assert!(m.entries(ROOT).unwrap().is_empty(), "the root never named d durably");
        let d = m.create(ROOT, name("d"), true, 0o755, 0, 0).unwrap();
        file(&mut m, d, "x", b"1");
        m.sync(ROOT).unwrap();
        m.cut();
        let d = m.lookup(ROOT, name("d")).unwrap();
        assert!(m.entries(d).unwrap().is_empty(), "d is durable, its entries were never synced");
    }

    #[test]
    fn an_unlinked_open_file_lives_until_released() {
        let mut m = Model::default();
        let f = file(&mut m, ROOT, "f", b"data");
        m.open(f).unwrap();
        m.remove(ROOT, name("f"), false).unwrap();
        assert_eq!(m.read(f, 0, 10).unwrap(), b"data");
        m.release(f);
        assert_eq!(m.read(f, 0, 10), Err(Error::NotFound));
    }

    #[test]
    fn rename_checks_what_posix_does() {
        let mut m = Model::default();
        let d = m.create(ROOT, name("d"), true, 0o755, 0, 0).unwrap();
        file(&mut m, d, "x", b"");
        file(&mut m, ROOT, "f", b"");
        assert_eq!(m.rename(ROOT, name("d"), d, name("d2"), false), Err(Error::Invalid));
        assert_eq!(m.rename(ROOT, name("f"), ROOT, name("d"), false), Err(Error::IsDir));
        assert_eq!(m.rename(ROOT, name("d"), ROOT, name("f"), false), Err(Error::NotDir));
        assert_eq!(m.rename(d, name("x"), ROOT, name("f"), true), Err(Error::Exists));
        assert_eq!(m.remove(ROOT, name("d"), true), Err(Error::NotEmpty));
        m.rename(d, name("x"), ROOT, name("f"), false).unwrap();
        m.remove(ROOT, name("d"), true).unwrap();
        assert_eq!(m.entries(ROOT).unwrap().iter().map(|(n, _)| n.to_str().unwrap()).collect::<Vec<_>>(), ["f"]);
    }
}
