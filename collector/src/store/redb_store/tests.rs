//! The redb engine's own tests: range reads, reopening, the forward log, packed hours.

use super::*;
use crate::store::PACK_AFTER_MS;
use shared::{Quality, Reading};

fn r(seq: u64, sensor: &str, ts: i64, v: f64) -> Reading {
    Reading { seq: shared::Seq(seq), sensor: sensor.into(), metric: "pm25".into(), ts_ms: ts, value: v, quality: Quality::Good }
}

fn w(readings: Vec<Reading>, progress: Vec<(SeqSpace, Progress)>) -> Write {
    Write { batches: vec![("gw-1".into(), std::sync::Arc::new(readings))], progress, forget: vec![] }
}

#[test]
fn range_queries_return_only_the_series_and_window_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    st.write(&w(vec![r(1, "aq-1", -5, 0.5), r(2, "aq-1", 10, 1.0), r(3, "aq-2", 15, 9.0), r(4, "aq-1", 20, 2.0)], vec![])).unwrap();
    let got: Vec<f64> = st.query("aq-1", "pm25", -10, 15, 100).unwrap().iter().map(|s| s.value).collect();
    assert_eq!(got, vec![0.5, 1.0]);
    assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().value, 2.0);
    assert!(st.query("aq-9", "pm25", 0, 100, 100).unwrap().is_empty());
    assert_eq!(st.series().len(), 2);
}

#[test]
fn data_progress_and_dirty_minutes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", 100, 1.0), r(2, "aq-1", 200, 3.0)], vec![(SeqSpace::new("gw-1", 0), Progress { contiguous: 1, above: vec![3], heard_ms: 5 })])).unwrap();
        st.sync().unwrap();
    }
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(st.progress().unwrap(), vec![(SeqSpace::new("gw-1", 0), Progress { contiguous: 1, above: vec![3], heard_ms: 5 })]);
    st.write(&w(vec![r(3, "aq-2", 100, 5.0)], vec![])).unwrap();
    assert_eq!(st.query("aq-1", "pm25", 0, 1000, 10).unwrap()[0].value, 1.0);
    assert_eq!(st.query("aq-2", "pm25", 0, 1000, 10).unwrap()[0].value, 5.0);
    // The minute written before reopening still gets its rollup.
    assert_eq!(st.roll_up().unwrap(), 2);
    let m = st.rollups("aq-1", "pm25", Level::Minute, 0, 0).unwrap();
    assert_eq!((m[0].count, m[0].sum, m[0].last), (2, 4.0, 3.0));
    assert_eq!(st.roll_up().unwrap(), 0);
}

/// The upkeep pass rolls up a minute once it is over, not on every pass
/// while it is still being written; a query rolls up its own series alone.
#[test]
fn minutes_are_rolled_up_once_over_or_when_their_series_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    st.write(&w(vec![r(1, "aq-1", 1_000, 1.0), r(2, "aq-1", 61_000, 2.0), r(3, "aq-2", 1_000, 7.0)], vec![])).unwrap();
    let minutes = |sensor: &str| st.rollups(sensor, "pm25", Level::Minute, 0, 60_000).unwrap().iter().map(|r| (r.start_ms, r.count)).collect::<Vec<_>>();
    assert_eq!(st.roll_up_ended(119_999).unwrap(), 2, "the first minute of each series");
    assert_eq!(minutes("aq-1"), [(0, 1)]);
    assert_eq!(minutes("aq-2"), [(0, 1)]);
    st.write(&w(vec![r(4, "aq-2", 62_000, 8.0)], vec![])).unwrap();
    assert_eq!(st.roll_up_series("aq-1", "pm25").unwrap(), 1);
    assert_eq!(minutes("aq-1"), [(0, 1), (60_000, 1)]);
    assert_eq!(minutes("aq-2"), [(0, 1)], "another series waits for its pass");
    assert_eq!(st.roll_up_series("aq-9", "pm25").unwrap(), 0, "no such series");
    assert_eq!(st.roll_up_ended(120_000).unwrap(), 1);
    assert_eq!(minutes("aq-2"), [(0, 1), (60_000, 1)]);
    let h = st.rollups("aq-2", "pm25", Level::Hour, 0, 0).unwrap();
    assert_eq!((h[0].count, h[0].sum), (2, 15.0));
}

/// A rollup pass reads without holding writers off; a minute written to
/// while it reads keeps its mark (on disk too), so the next pass, even after
/// a restart, counts the new sample.
#[test]
fn a_minute_written_during_a_rollup_pass_is_rolled_up_again_even_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", 1_000, 1.0), r(2, "aq-1", 61_000, 2.0)], vec![])).unwrap();
        let pass = st.take_dirty(Minutes::All).unwrap();
        let made = st.read(|t| st.make_rollups(t, &pass)).unwrap();
        st.write(&w(vec![r(3, "aq-1", 2_000, 5.0)], vec![])).unwrap();
        st.save_rollups(&pass, made).unwrap();
        drop(pass);
        let m = st.rollups("aq-1", "pm25", Level::Minute, 0, 60_000).unwrap();
        assert_eq!(m.iter().map(|r| r.count).collect::<Vec<_>>(), [1, 1], "made before the write");
        st.sync().unwrap();
    }
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(st.roll_up().unwrap(), 1, "only the minute written during the pass");
    let m = st.rollups("aq-1", "pm25", Level::Minute, 0, 60_000).unwrap();
    assert_eq!(m.iter().map(|r| (r.count, r.max)).collect::<Vec<_>>(), [(2, 5.0), (1, 2.0)]);
    let h = st.rollups("aq-1", "pm25", Level::Hour, 0, 0).unwrap();
    assert_eq!((h[0].count, h[0].sum), (3, 8.0));
}

/// The upkeep pass and a query's pass for one series take different
/// minutes of the same hour, each reading before the other saves: the hour
/// rollup counts both minutes whichever saves last.
#[test]
fn overlapping_rollup_passes_leave_the_hour_with_every_minute() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    st.write(&w(vec![r(1, "aq-1", 1_000, 1.0), r(2, "aq-1", 61_000, 2.0), r(3, "aq-2", 1_000, 4.0)], vec![])).unwrap();
    // The upkeep pass takes the first minute of both series and reads...
    let upkeep = st.take_dirty(Minutes::EndedBy(60_000)).unwrap();
    let made = st.read(|t| st.make_rollups(t, &upkeep)).unwrap();
    // ...a query rolls up aq-1's second minute and saves first...
    assert_eq!(st.roll_up_series("aq-1", "pm25").unwrap(), 1);
    // ...and the upkeep pass saves last.
    st.save_rollups(&upkeep, made).unwrap();
    drop(upkeep);
    let hour = |sensor: &str| st.rollups(sensor, "pm25", Level::Hour, 0, 0).unwrap().iter().map(|h| (h.count, h.sum)).collect::<Vec<_>>();
    assert_eq!(hour("aq-1"), [(2, 3.0)], "both minutes in aq-1's hour");
    assert_eq!(hour("aq-2"), [(1, 4.0)]);
    assert!(st.saves.lock().unwrap().recent.is_empty(), "no pass open: nothing kept");
    // The other order: the query saves last.
    st.write(&w(vec![r(4, "aq-1", 121_000, 8.0), r(5, "aq-1", 181_000, 16.0)], vec![])).unwrap();
    let query = st.take_dirty(Minutes::OfSeries("aq-1", "pm25")).unwrap();
    let made = st.read(|t| st.make_rollups(t, &query)).unwrap();
    assert_eq!(st.roll_up().unwrap(), 0, "the query took them all");
    st.write(&w(vec![r(6, "aq-1", 241_000, 32.0)], vec![])).unwrap();
    assert_eq!(st.roll_up_ended(300_000).unwrap(), 1);
    st.save_rollups(&query, made).unwrap();
    drop(query);
    assert_eq!(hour("aq-1"), [(5, 59.0)]);
}

#[test]
fn forward_log_keeps_entries_in_order_until_done_and_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { keep_series: false, forward: true, ..StoreOptions::default() };
    {
        let st = RedbStore::open_with(dir.path(), opts.clone()).unwrap();
        st.write(&w(vec![r(1, "aq-1", 10, 1.0), r(2, "aq-1", 20, 2.0)], vec![])).unwrap();
        st.write(&w(vec![r(3, "aq-2", 30, 3.0)], vec![])).unwrap();
        st.write(&w(vec![], vec![])).unwrap();
        assert_eq!(st.forward_backlog(), 3);
        let first = st.forward_next(1).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].readings.len(), 2);
        assert_eq!(first[0].gateway, "gw-1");
        st.forward_done(first[0].id).unwrap();
        assert_eq!(st.forward_backlog(), 1);
        // Series are not kept when the external sink is the only one.
        assert!(st.series().is_empty());
        st.sync().unwrap();
    }
    let st = RedbStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(st.forward_backlog(), 1);
    let rest = st.forward_next(100).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].readings[0].value, 3.0);
    st.write(&w(vec![r(4, "aq-2", 40, 4.0)], vec![])).unwrap();
    let all = st.forward_next(100).unwrap();
    assert!(all[1].id > all[0].id, "ids keep growing after reopening");
    st.forward_done(all[1].id).unwrap();
    assert!(st.forward_next(100).unwrap().is_empty());
    assert_eq!(st.forward_backlog(), 0);
}

#[test]
fn packed_hours_read_back_whole_and_late_samples_join_them() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 1_700_006_400_000;
    let rs: Vec<Reading> = (0..720).map(|i| r(i + 1, "aq-1", h0 + i as i64 * 10_000, 20.0 + (i % 7) as f64 * 0.25)).collect();
    st.write(&w(rs.clone(), vec![])).unwrap();
    st.roll_up().unwrap();
    // Only the closed hour is packed: the second one ended less than PACK_AFTER_MS ago.
    assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS - 1).unwrap(), 1);
    assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 1);
    let all = st.query("aq-1", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|s| (s.ts_ms, s.value)).collect::<Vec<_>>(), rs.iter().map(|r| (r.ts_ms, r.value)).collect::<Vec<_>>());
    assert_eq!(st.query("aq-1", "pm25", h0 + 3_585_000, h0 + 3_620_000, 2).unwrap().iter().map(|s| s.ts_ms).collect::<Vec<_>>(), vec![h0 + 3_600_000 - 10_000, h0 + 3_600_000]);
    assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().ts_ms, h0 + 719 * 10_000);
    // A late sample for the packed first hour, and a corrected one.
    st.write(&w(vec![r(900, "aq-1", h0 + 5, 99.0), r(901, "aq-1", h0 + 10_000, 98.0)], vec![])).unwrap();
    let first = st.query("aq-1", "pm25", h0, h0 + 10_000, 10).unwrap();
    assert_eq!(first.iter().map(|s| (s.ts_ms, s.value)).collect::<Vec<_>>(), vec![(h0, 20.0), (h0 + 5, 99.0), (h0 + 10_000, 98.0)]);
    st.roll_up().unwrap();
    let m = st.rollups("aq-1", "pm25", Level::Minute, h0, h0).unwrap();
    assert_eq!((m[0].count, m[0].max), (7, 99.0), "the minute's rollup counts packed and late samples once each");
    assert_eq!(st.pack(h0 + 10 * HOUR).unwrap(), 1);
    assert_eq!(st.query("aq-1", "pm25", h0, h0 + HOUR - 1, usize::MAX).unwrap().len(), 361);
    // Retention cuts through a block.
    let e = st.expire(h0 + HOUR / 2 + 1000, &|_, _| Keep { raw_ms: Some(1000), minute_ms: None, hour_ms: None }).unwrap();
    assert_eq!(e.raw, 181);
    assert_eq!(st.query("aq-1", "pm25", i64::MIN, i64::MAX, 1).unwrap()[0].ts_ms, h0 + HOUR / 2);
    drop(st);
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(st.query("aq-1", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap().len(), 721 - 181);
}

#[test]
fn each_epoch_keeps_its_own_progress_and_a_reset_forgets_one() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (SeqSpace::new("gw-1", 0), SeqSpace::new("gw-1", 0xdead_beef));
    let p = |c| Progress { contiguous: c, above: vec![], heard_ms: 1 };
    {
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![], vec![(old.clone(), p(100)), (new.clone(), p(7))])).unwrap();
        // Progress as written before heard times were kept still reads, as heard at 0.
        let before = postcard::to_allocvec(&(42u64, vec![44u64])).unwrap();
        st.update(redb::Durability::Immediate, |t| {
            t.insert(&keys::progress(&SeqSpace::new("gw-2", 0))[..], &before[..]).map_err(st.err())?;
            Ok(())
        })
        .unwrap();
    }
    let st = RedbStore::open(dir.path()).unwrap();
    let mut got = st.progress().unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, vec![(old.clone(), p(100)), (new.clone(), p(7)), (SeqSpace::new("gw-2", 0), Progress { contiguous: 42, above: vec![44], heard_ms: 0 })]);
    st.write(&Write { forget: vec![new], ..Write::default() }).unwrap();
    assert_eq!(st.progress().unwrap().len(), 2);
}

#[test]
fn an_hours_minute_rollups_pack_into_one_entry_and_read_the_same_with_late_samples_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 1_700_006_400_000;
    let rs: Vec<Reading> = (0..720).map(|i| r(i + 1, "aq-1", h0 + i as i64 * 10_000, 20.0 + (i % 7) as f64 * 0.25)).collect();
    st.write(&w(rs, vec![])).unwrap();
    st.roll_up().unwrap();
    let minutes = st.rollups("aq-1", "pm25", Level::Minute, h0, h0 + 2 * HOUR - 1).unwrap();
    let hours = st.rollups("aq-1", "pm25", Level::Hour, h0, h0 + 2 * HOUR - 1).unwrap();
    assert_eq!((minutes.len(), hours.len()), (120, 2));
    assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 2);
    let entries = |prefix: u8| st.read(|t| Ok(t.range::<&[u8]>(&[prefix][..]..&keys::after(prefix)[..]).map_err(st.err())?.count())).unwrap();
    assert_eq!((entries(b'M'), entries(b'R')), (0, 2), "each hour's 60 minute rollups are one entry");
    assert_eq!(st.rollups("aq-1", "pm25", Level::Minute, h0, h0 + 2 * HOUR - 1).unwrap(), minutes);
    assert_eq!(st.rollups("aq-1", "pm25", Level::Minute, h0 + 90_000, h0 + 150_000).unwrap(), minutes[2..3].to_vec(), "a window inside a packed hour");
    // A late sample for the packed first hour: its minute and hour count it once.
    st.write(&w(vec![r(900, "aq-1", h0 + 5, 99.0)], vec![])).unwrap();
    st.roll_up().unwrap();
    let after = st.rollups("aq-1", "pm25", Level::Minute, h0, h0 + 2 * HOUR - 1).unwrap();
    assert_eq!((after.len(), after[0].count, after[0].max), (120, 7, 99.0));
    assert_eq!(after[1..], minutes[1..]);
    let h = st.rollups("aq-1", "pm25", Level::Hour, h0, h0).unwrap();
    assert_eq!((h[0].count, h[0].max), (361, 99.0));
    assert_eq!(st.pack(h0 + 10 * HOUR).unwrap(), 1);
    assert_eq!(st.rollups("aq-1", "pm25", Level::Minute, h0, h0 + 2 * HOUR - 1).unwrap(), after);
    assert_eq!(entries(b'M'), 0);
    // Retention cuts through a packed hour of minute rollups.
    let e = st.expire(h0 + HOUR / 2 + 2 * 60_000 - 1, &|_, _| Keep { raw_ms: None, minute_ms: Some(60_000), hour_ms: None }).unwrap();
    assert_eq!(e.rollups, 30);
    let left = st.rollups("aq-1", "pm25", Level::Minute, i64::MIN, i64::MAX).unwrap();
    assert_eq!((left.len(), left[0].start_ms), (90, h0 + HOUR / 2));
    drop(st);
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(st.rollups("aq-1", "pm25", Level::Minute, i64::MIN, i64::MAX).unwrap(), left);
}

/// The oldest sample time the store keeps in memory, checked against what a
/// read over all time gives, here and after reopening.
fn first_is_what_a_read_gives(st: &RedbStore, sensor: &str) -> Option<i64> {
    let read = st.query(sensor, "pm25", i64::MIN, i64::MAX, 1).unwrap().first().map(|s| s.ts_ms);
    assert_eq!(st.first_ts(sensor, "pm25").unwrap(), read, "{sensor}: kept in memory vs read");
    read
}

#[test]
fn the_oldest_sample_time_follows_late_older_readings_packing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let h0 = 100 * HOUR;
    {
        let st = RedbStore::open(dir.path()).unwrap();
        assert_eq!(st.first_ts("aq-1", "pm25").unwrap(), None);
        st.write(&w((0..360).map(|i| r(i as u64 + 1, "aq-1", h0 + HOUR + i * 10_000, 1.0)).collect(), vec![])).unwrap();
        assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + HOUR));
        // A newer reading leaves it; a late older one, in a write with newer ones, lowers it.
        st.write(&w(vec![r(400, "aq-1", h0 + 3 * HOUR, 2.0)], vec![])).unwrap();
        assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + HOUR));
        st.write(&w(vec![r(401, "aq-1", h0 + 4 * HOUR, 2.0), r(402, "aq-1", h0 + 1_234, 3.0), r(403, "aq-2", h0 + 7, 1.0)], vec![])).unwrap();
        assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + 1_234));
        assert_eq!(first_is_what_a_read_gives(&st, "aq-2"), Some(h0 + 7));
        st.roll_up().unwrap();
        assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 3);
        assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + 1_234));
        st.sync().unwrap();
    }
    // Found again on disk: the oldest sample is in a block now.
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + 1_234));
    // Older than a packed hour, as a plain sample.
    st.write(&w(vec![r(500, "aq-1", h0 - 5, 4.0)], vec![])).unwrap();
    assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 - 5));
    drop(st);
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 - 5));
    assert_eq!(first_is_what_a_read_gives(&st, "aq-2"), Some(h0 + 7));
}

#[test]
fn the_oldest_sample_time_after_retention_is_the_oldest_sample_left() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 100 * HOUR;
    // Three hours at 10 s, the first two packed; a second series only in the first hour.
    let mut rs: Vec<Reading> = (0..1080).map(|i| r(i as u64 + 1, "aq-1", h0 + i * 10_000, 1.0)).collect();
    rs.extend((0..10).map(|i| r(2000 + i as u64, "aq-2", h0 + i * 60_000, 1.0)));
    st.write(&w(rs, vec![])).unwrap();
    st.roll_up().unwrap();
    assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 3);
    let keep = |raw: i64| move |_: &str, _: &str| Keep { raw_ms: Some(raw), minute_ms: None, hour_ms: None };
    // A cutoff inside the first (packed) block: aq-1 starts at it, aq-2 keeps its last minutes.
    let e = st.expire(h0 + 10 * HOUR, &keep(10 * HOUR - 305_000)).unwrap();
    assert_eq!(e.raw, 31 + 6);
    assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + 310_000));
    assert_eq!(first_is_what_a_read_gives(&st, "aq-2"), Some(h0 + 360_000));
    // Two hours later, past the packed hours into plain samples; aq-2 has none left.
    st.expire(h0 + 12 * HOUR - 300_000, &keep(10 * HOUR - 305_000)).unwrap();
    assert_eq!(first_is_what_a_read_gives(&st, "aq-1"), Some(h0 + 2 * HOUR + 10_000));
    assert_eq!(first_is_what_a_read_gives(&st, "aq-2"), None);
    // A reading older than what is left, written after, is the oldest again.
    st.write(&w(vec![r(3000, "aq-2", h0 + 5, 1.0)], vec![])).unwrap();
    assert_eq!(first_is_what_a_read_gives(&st, "aq-2"), Some(h0 + 5));
}

/// How many `X` chunks the store holds once its open samples are written.
fn chunks(st: &RedbStore) -> usize {
    st.settle().unwrap();
    st.read(|t| Ok(t.range::<&[u8]>(&b"X"[..]..&keys::after(b'X')[..]).unwrap().count())).unwrap()
}

fn values(st: &RedbStore, sensor: &str) -> Vec<(i64, f64)> {
    st.query(sensor, "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap().iter().map(|s| (s.ts_ms, s.value)).collect()
}

#[test]
fn a_write_is_one_chunk_per_series_and_minute_and_the_later_write_of_a_time_wins_across_reopening_and_packing() {
    let dir = tempfile::tempdir().unwrap();
    let h0 = 10 * HOUR;
    let mut want: Vec<(i64, f64)> = (0..100).map(|i| (h0 + i * 1_000, i as f64)).collect();
    {
        let st = RedbStore::open(dir.path()).unwrap();
        let mut rs: Vec<Reading> = want.iter().map(|&(ts, v)| r(1, "aq-1", ts, v)).collect();
        // The same time twice in one write: the later reading is kept, as a key overwritten would.
        rs.push(r(2, "aq-1", h0 + 5_000, 55.0));
        rs.extend((0..10).map(|i| r(3, "aq-2", h0 + i, 1.0)));
        rs.extend((0..5).map(|i| r(4, "aq-1", h0 + HOUR + i, 2.0)));
        st.write(&w(rs, vec![])).unwrap();
        assert_eq!(chunks(&st), 4, "aq-1 in two minutes of one hour and one of the next, aq-2 in one minute");
        want[5].1 = 55.0;
        want.extend((0..5).map(|i| (h0 + HOUR + i, 2.0)));
        assert_eq!(values(&st, "aq-1"), want);
        st.write(&w(vec![r(5, "aq-1", h0 + 7_000, 77.0)], vec![])).unwrap();
        want[7].1 = 77.0;
        assert_eq!(values(&st, "aq-1"), want);
        st.sync().unwrap();
    }
    // After reopening, chunks go on being numbered after the old ones: a new
    // chunk under an old number would replace that chunk, samples and all.
    let st = RedbStore::open(dir.path()).unwrap();
    st.write(&w(vec![r(6, "aq-1", h0 + 9_000, 99.0), r(6, "aq-1", h0 + HOUR + 4, 3.0)], vec![])).unwrap();
    want[9].1 = 99.0;
    *want.last_mut().unwrap() = (h0 + HOUR + 4, 3.0);
    assert_eq!(values(&st, "aq-1"), want);
    assert_eq!(st.last("aq-1", "pm25").unwrap().map(|s| (s.ts_ms, s.value)), Some((h0 + HOUR + 4, 3.0)));
    assert_eq!(st.query("aq-1", "pm25", h0 + 8_000, h0 + 9_500, 10).unwrap().iter().map(|s| s.value).collect::<Vec<_>>(), vec![8.0, 99.0]);
    st.roll_up().unwrap();
    assert_eq!(st.rollups("aq-1", "pm25", Level::Minute, h0, h0).unwrap()[0].count, 60);
    // Packing takes every chunk of the closed hours into their blocks.
    assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 3);
    assert_eq!(chunks(&st), 0);
    assert_eq!(values(&st, "aq-1"), want);
    assert_eq!(values(&st, "aq-2").len(), 10);
}

#[test]
fn a_store_written_before_chunks_reads_merges_and_packs_its_plain_samples() {
    let dir = tempfile::tempdir().unwrap();
    let h0 = 20 * HOUR;
    {
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", h0 + 100, 7.0)], vec![])).unwrap();
        // `P` samples as the store wrote them before chunks, one older than
        // the chunk at the same time (the chunk's value wins).
        let id = st.id("aq-1", "pm25").unwrap();
        st.update(Durability::Immediate, |t| {
            for (ts, v) in [(h0 + 1, 1.0), (h0 + 2, 2.0), (h0 + 100, 6.0), (h0 + 200, 8.0)] {
                t.insert(&keys::point(id, ts)[..], &keys::encode_sample(&r(0, "aq-1", ts, v))[..]).unwrap();
            }
            Ok(())
        })
        .unwrap();
    }
    let st = RedbStore::open(dir.path()).unwrap();
    let want = vec![(h0 + 1, 1.0), (h0 + 2, 2.0), (h0 + 100, 7.0), (h0 + 200, 8.0)];
    assert_eq!(values(&st, "aq-1"), want);
    assert_eq!(st.first_ts("aq-1", "pm25").unwrap(), Some(h0 + 1));
    assert_eq!(st.last("aq-1", "pm25").unwrap().map(|s| s.value), Some(8.0));
    st.roll_up().unwrap();
    assert_eq!(st.pack(h0 + HOUR + PACK_AFTER_MS).unwrap(), 1);
    assert_eq!(values(&st, "aq-1"), want);
    let left = st.read(|t| Ok(t.range::<&[u8]>(&b"P"[..]..&keys::after(b'P')[..]).unwrap().count())).unwrap();
    assert_eq!((left, chunks(&st)), (0, 0), "packing leaves no plain sample behind");
}

#[test]
fn retention_cuts_a_chunk_at_its_cutoff_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 30 * HOUR;
    // Two hours at 10 s in one write: a chunk per minute, none packed.
    st.write(&w((0..720).map(|i| r(1, "aq-1", h0 + i * 10_000, i as f64)).collect(), vec![])).unwrap();
    let keep = |_: &str, _: &str| Keep { raw_ms: Some(HOUR / 2 - 25_000), minute_ms: None, hour_ms: None };
    // Cutoff at h0 + 90 min 25 s: the chunks of the 90 minutes before it go
    // whole, the 91st loses its first three samples.
    let e = st.expire(h0 + 2 * HOUR, &keep).unwrap();
    assert_eq!(e.raw, 543);
    assert_eq!(chunks(&st), 30);
    assert_eq!(values(&st, "aq-1").first(), Some(&(h0 + 90 * 60_000 + 30_000, 543.0)));
    assert_eq!(values(&st, "aq-1").len(), 177);
    assert_eq!(st.first_ts("aq-1", "pm25").unwrap(), Some(h0 + 90 * 60_000 + 30_000));
}

/// A store written before time-ordered chunks holds them keyed by series
/// (`W`), by minute or, before minute chunks, by hour with samples anywhere
/// in it. Opened, they are moved to `X` keys a minute each; reads, rollups,
/// packing and retention see them beside the chunks written since, the
/// later write of a time winning.
#[test]
fn chunks_keyed_by_series_from_earlier_versions_are_moved_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let (h0, min) = (10 * HOUR, 60_000);
    {
        let st = RedbStore::open(dir.path()).unwrap();
        // Marks the hour unpacked, as the old store's writes did.
        st.write(&w(vec![r(1, "aq-1", h0 + 1_000, 1.0)], vec![])).unwrap();
        st.settle().unwrap();
        let id = st.id("aq-1", "pm25").unwrap();
        let s = |ts_ms: i64, value: f64| Sample { ts_ms, value, quality: Quality::Good };
        // As a store before minute chunks wrote it: one chunk for the hour,
        // then (a later write) one keyed by its minute.
        let hour_chunk = [s(h0 + 1_000, 1.5), s(h0 + min + 30_000, 2.0), s(h0 + 2 * min + 30_000, 3.0)];
        let n = st.next_chunk.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        st.update(Durability::Immediate, |t| {
            t.insert(&keys::legacy_chunk(id, h0, n)[..], &keys::encode_chunk(h0, &hour_chunk)[..]).map_err(st.err())?;
            t.insert(&keys::legacy_chunk(id, h0 + 2 * min, n + 1)[..], &keys::encode_chunk(h0 + 2 * min, &[s(h0 + 2 * min + 30_000, 3.5)])[..]).map_err(st.err())?;
            t.insert(keys::NEXT_CHUNK, &(n + 2).to_be_bytes()[..]).map_err(st.err())?;
            Ok(())
        })
        .unwrap();
    }
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!((raw_entries(&st, b'W'), raw_entries(&st, b'X')), (0, 5), "1.0's chunk, the hour's in three minutes, the minute's");
    st.write(&w(vec![r(2, "aq-1", h0 + min + 30_000, 20.0), r(3, "aq-1", h0 + 3 * min + 20_000, 4.0)], vec![])).unwrap();
    let values = |from: i64, to: i64| st.query("aq-1", "pm25", from, to, 100).unwrap().iter().map(|s| (s.ts_ms - h0, s.value)).collect::<Vec<_>>();
    let all = [(1_000, 1.5), (min + 30_000, 20.0), (2 * min + 30_000, 3.5), (3 * min + 20_000, 4.0)];
    assert_eq!(values(h0, h0 + HOUR - 1), all);
    assert_eq!(values(h0 + 2 * min, h0 + 3 * min - 1), all[2..3], "a minute held only by the old chunks, the later one winning");
    assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().value, 4.0);
    st.roll_up().unwrap();
    let minutes: Vec<_> = st.rollups("aq-1", "pm25", Level::Minute, h0, h0 + HOUR - 1).unwrap().iter().map(|r| (r.start_ms - h0, r.count, r.sum)).collect();
    assert!(minutes.contains(&(min, 1, 20.0)), "{minutes:?}");
    let e = st.expire(h0 + 2 * min + 60_000, &|_, _| Keep { raw_ms: Some(60_000), minute_ms: None, hour_ms: None }).unwrap();
    assert_eq!(e.raw, 4, "1.0 and 1.5 at 1 s, 2.0 and 20.0 at 90 s");
    assert_eq!(values(h0, h0 + HOUR - 1), all[2..]);
    assert_eq!(st.first_ts("aq-1", "pm25").unwrap(), Some(h0 + 2 * min + 30_000));
    st.pack(h0 + HOUR + PACK_AFTER_MS).unwrap();
    assert_eq!(values(h0, h0 + HOUR - 1), all[2..]);
    assert_eq!(chunks(&st), 0, "packing took the hour's chunk and the minutes'");
}

/// An expiry pass visits only the series with something past its
/// retention: with a million series it runs every minute. A new series
/// costs no visit until its first sample is old enough.
#[test]
fn expiry_visits_only_series_with_something_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 10 * HOUR;
    st.write(&w(vec![r(1, "aq-1", h0, 1.0), r(2, "aq-2", h0, 2.0), r(3, "aq-3", h0, 3.0)], vec![])).unwrap();
    let keep = |_: &str, _: &str| Keep { raw_ms: Some(HOUR), minute_ms: None, hour_ms: None };
    let e = st.expire(h0 + 10 * 60_000, &keep).unwrap();
    assert_eq!((e.series_visited, e.raw), (0, 0), "nothing due before h0 + 1 h");
    // Found on disk at a start: each visited once, then known.
    st.sync().unwrap();
    drop(st);
    let st = RedbStore::open(dir.path()).unwrap();
    let e = st.expire(h0 + 15 * 60_000, &keep).unwrap();
    assert_eq!((e.series_visited, e.raw), (3, 0));
    let e = st.expire(h0 + 20 * 60_000, &keep).unwrap();
    assert_eq!((e.series_visited, e.raw), (0, 0));
    // A late sample older than the series' oldest makes it due at once.
    st.write(&w(vec![r(4, "aq-1", h0 - 2 * HOUR, 0.5)], vec![])).unwrap();
    let e = st.expire(h0 + 30 * 60_000, &keep).unwrap();
    assert_eq!((e.series_visited, e.raw), (1, 1));
    let e = st.expire(h0 + HOUR + 1, &keep).unwrap();
    assert_eq!((e.series_visited, e.raw), (3, 3));
    assert!(st.query("aq-2", "pm25", i64::MIN, i64::MAX, 10).unwrap().is_empty());
}

/// Closed hours are laid end to end in page-sized pieces: the file holds
/// about what the blocks take, not a 4 KiB page per 2 KB block; a late
/// sample repacks its hour in place at the stream's end or in its entry
/// elsewhere, and retention deletes the pieces nothing points into.
#[test]
fn packed_hours_fill_whole_pages_and_their_streams_shrink_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = RedbStore::open(dir.path()).unwrap();
    let h0 = 1_700_006_400_000;
    let (series, hours) = (6u64, 12i64);
    let mut seq = 0;
    let mut rng = 7u64;
    let mut given: Vec<Vec<(i64, u64)>> = vec![Vec::new(); series as usize];
    for h in 0..hours {
        let mut batch = Vec::new();
        for s in 0..series {
            for i in 0..3600 {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let (ts, v) = (h0 + h * HOUR + i * 1000, 20.0 + (rng >> 60) as f64 / 100.0);
                seq += 1;
                batch.push(r(seq, &format!("aq-{s}"), ts, v));
                given[s as usize].push((ts, v.to_bits()));
            }
        }
        st.write(&w(batch, vec![])).unwrap();
    }
    st.roll_up().unwrap();
    assert_eq!(st.pack(h0 + hours * HOUR + PACK_AFTER_MS).unwrap(), series * hours as u64);
    let read_all =
        |st: &RedbStore, s: u64| st.query(&format!("aq-{s}"), "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap().iter().map(|x| (x.ts_ms, x.value.to_bits())).collect::<Vec<_>>();
    for s in 0..series {
        assert_eq!(read_all(&st, s), given[s as usize], "series {s} bit for bit");
    }
    let entries = |st: &RedbStore, prefix: u8| st.read(|t| Ok(t.range::<&[u8]>(&[prefix][..]..&keys::after(prefix)[..]).map_err(st.err())?.count())).unwrap();
    let packed_bytes: u64 = (0..series)
        .flat_map(|s| (0..hours).map(move |h| (s, h0 + h * HOUR)))
        .map(|(s, h)| {
            let samples = st.query(&format!("aq-{s}"), "pm25", h, h + HOUR - 1, usize::MAX).unwrap();
            let minutes = st.rollups(&format!("aq-{s}"), "pm25", Level::Minute, h, h + HOUR - 1).unwrap();
            (block::encode(h, &samples).len() + block::rollups::encode(h, &minutes).len()) as u64
        })
        .sum();
    let per_block = packed_bytes / (series * hours as u64);
    assert!((2_000..4_000).contains(&per_block), "an hour's blocks take {per_block} bytes: the case where a page each wastes most");
    st.compact().unwrap();
    let file = st.size_on_disk();
    assert!(file < packed_bytes * 5 / 4 + 64_000, "{file} bytes of file for {packed_bytes} bytes of blocks");

    // A late sample for each series' last hour (its stream's end) and one for its first.
    let last = h0 + (hours - 1) * HOUR;
    let late: Vec<Reading> = (0..series).flat_map(|s| [r(900_000 + s, &format!("aq-{s}"), last + 500, 1.5), r(910_000 + s, &format!("aq-{s}"), h0 + 500, 2.5)]).collect();
    st.write(&w(late, vec![])).unwrap();
    let pieces = entries(&st, b'K');
    assert_eq!(st.pack(h0 + hours * HOUR + PACK_AFTER_MS).unwrap(), 2 * series);
    assert!(entries(&st, b'K') <= pieces + series as usize, "the last hour went back in place: {} pieces, {pieces} before", entries(&st, b'K'));
    for s in 0..series {
        let g = &mut given[s as usize];
        g.extend([(last + 500, 1.5f64.to_bits()), (h0 + 500, 2.5f64.to_bits())]);
        g.sort_unstable();
        assert_eq!(read_all(&st, s), *g, "series {s} after repacking");
    }

    // Retention takes the first half: the pieces before what is left go.
    let keep = |_: &str, _: &str| Keep { raw_ms: Some(HOUR * hours / 2), minute_ms: Some(HOUR * hours / 2), hour_ms: None };
    st.expire(h0 + hours * HOUR, &keep).unwrap();
    let (samples_left, minutes_left) = (entries(&st, b'K'), entries(&st, b'Q'));
    assert!(samples_left <= pieces / 2 + 2 * series as usize, "{samples_left} sample pieces left of {pieces}");
    assert!(minutes_left > 0);
    drop(st);
    let st = RedbStore::open(dir.path()).unwrap();
    for s in 0..series {
        let cut = h0 + hours / 2 * HOUR;
        let want: Vec<(i64, u64)> = given[s as usize].iter().filter(|(ts, _)| *ts >= cut).copied().collect();
        assert_eq!(read_all(&st, s), want, "series {s} after retention and reopening");
        assert_eq!(st.rollups(&format!("aq-{s}"), "pm25", Level::Minute, i64::MIN, i64::MAX).unwrap().len(), 60 * hours as usize / 2);
    }
}

/// An hour of a series polled every few minutes packs into a block smaller
/// than a pointer and a piece are worth: it stays in its entry.
#[test]
fn a_small_packed_hour_stays_in_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStore::open(dir.path()).unwrap();
    let h0 = 1_700_006_400_000;
    let rs: Vec<Reading> = (0..10).map(|i| r(i + 1, "aq-1", h0 + i as i64 * 360_000, 20.0 + i as f64 / 4.0)).collect();
    st.write(&w(rs.clone(), vec![])).unwrap();
    st.roll_up().unwrap();
    assert_eq!(st.pack(h0 + HOUR + PACK_AFTER_MS).unwrap(), 1);
    let entries = |prefix: u8| st.read(|t| Ok(t.range::<&[u8]>(&[prefix][..]..&keys::after(prefix)[..]).map_err(st.err())?.count())).unwrap();
    assert_eq!((entries(b'C'), entries(b'R'), entries(b'K'), entries(b'Q')), (1, 1, 0, 0));
    let back = st.query("aq-1", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap();
    assert_eq!(back.iter().map(|s| (s.ts_ms, s.value)).collect::<Vec<_>>(), rs.iter().map(|r| (r.ts_ms, r.value)).collect::<Vec<_>>());
}

/// A rollup's every field, floats as their bits.
fn bits(r: &Rollup) -> [u64; 7] {
    [r.start_ms as u64, r.min.to_bits(), r.max.to_bits(), r.sum.to_bits(), r.count as u64, r.last_ts as u64, r.last.to_bits()]
}

/// Rollups as reading the store back makes them, bit for bit: each minute's
/// samples folded in time order, each hour's minutes folded in minute order.
fn rollups_read_back(st: &RedbStore, sensor: &str, hour: i64) -> (Vec<[u64; 7]>, Vec<[u64; 7]>) {
    let mut minutes: Vec<Rollup> = Vec::new();
    for s in st.query(sensor, "pm25", hour, hour + HOUR - 1, usize::MAX).unwrap() {
        let r = Rollup::of(minute_of(s.ts_ms), s.ts_ms, s.value);
        match minutes.last_mut() {
            Some(m) if m.start_ms == r.start_ms => m.merge(&r),
            _ => minutes.push(r),
        }
    }
    let mut h = None;
    for m in &minutes {
        merge_into(&mut h, Rollup { start_ms: hour, ..*m });
    }
    (minutes.iter().map(bits).collect(), h.iter().map(bits).collect())
}

/// Rollups kept while writing (so that a pass over a million series need
/// not read them back) are exactly those read back, through samples out of
/// order, a sample replaced at its time, a minute written again after a
/// pass took it, passes that overlap, and a reopened store whose open hour
/// it did not write alone.
#[test]
fn rollups_kept_while_writing_are_those_read_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // An hour this store has seen from its start: the only kind kept running.
    let h = hour_of(shared::now_ms());
    let stored = |st: &RedbStore, sensor: &str| {
        let m: Vec<[u64; 7]> = st.rollups(sensor, "pm25", Level::Minute, h, h + HOUR - 1).unwrap().iter().map(bits).collect();
        let hr: Vec<[u64; 7]> = st.rollups(sensor, "pm25", Level::Hour, h, h).unwrap().iter().map(bits).collect();
        (m, hr)
    };
    let sensors = ["aq-1", "aq-2", "aq-3", "aq-4"];
    {
        let st = RedbStore::open(dir.path()).unwrap();
        // Sums whose order of addition shows: 0.1 + 0.2 + 0.3 is not 0.3 + 0.2 + 0.1.
        st.write(&w(
            vec![r(1, "aq-1", h + 1_000, 0.1), r(2, "aq-1", h + 2_000, 0.2), r(3, "aq-1", h + 61_000, 1e16), r(4, "aq-2", h + 1_000, 0.3), r(5, "aq-3", h + 5_000, 1.0)],
            vec![],
        ))
        .unwrap();
        // Into chunks apart, as writes a settle apart are (one settle would
        // sort both writes' samples of a minute into one chunk).
        st.settle().unwrap();
        st.write(&w(vec![r(6, "aq-1", h + 3_000, 0.3), r(7, "aq-2", h + 500, 0.7), r(8, "aq-3", h + 5_000, 2.0), r(9, "aq-4", h + 7_000, 0.1)], vec![])).unwrap();
        let pass = st.take_dirty(Minutes::EndedBy(h + 60_000)).unwrap();
        // aq-1 and aq-4 in order; aq-2's sample came before its latest, aq-3's replaced one.
        let mut known: Vec<i64> = pass.known.keys().map(|(_, m)| *m - h).collect();
        known.sort();
        assert_eq!(known, [0, 0], "minute 0 of aq-1 and aq-4 kept running");
        // Written while the pass runs: not in its rollup, so not kept.
        st.write(&w(vec![r(10, "aq-4", h + 8_000, 0.2), r(11, "aq-4", h + 62_000, 0.3)], vec![])).unwrap();
        let made = st.read(|t| st.make_rollups(t, &pass)).unwrap();
        st.save_rollups(&pass, made).unwrap();
        drop(pass);
        // After its minute was rolled up: rolled up again from the store.
        st.write(&w(vec![r(12, "aq-1", h + 4_000, 0.4), r(13, "aq-1", h + 62_000, 0.5)], vec![])).unwrap();
        assert_eq!(st.roll_up_series("aq-1", "pm25").unwrap(), 2);
        st.roll_up().unwrap();
        for s in sensors {
            assert_eq!(stored(&st, s), rollups_read_back(&st, s, h), "{s}");
        }
        st.sync().unwrap();
    }
    // Reopened: the open hour holds samples this process did not write.
    let st = RedbStore::open(dir.path()).unwrap();
    st.write(&w(vec![r(14, "aq-1", h + 121_000, 0.6), r(15, "aq-4", h + 121_000, 0.7)], vec![])).unwrap();
    st.roll_up().unwrap();
    for s in sensors {
        assert_eq!(stored(&st, s), rollups_read_back(&st, s, h), "{s} after reopening");
    }
    assert_eq!(st.rollups("aq-1", "pm25", Level::Hour, h, h).unwrap()[0].count, 7);
}

/// How many entries with key `prefix` the store holds, as they are (nothing settled).
fn raw_entries(st: &RedbStore, prefix: u8) -> usize {
    st.read(|t| Ok(t.range::<&[u8]>(&[prefix][..]..&keys::after(prefix)[..]).map_err(st.err())?.count())).unwrap()
}

/// Writes land in the open samples' log, one entry each and no chunk; a
/// stop before anything settles them loses none: opening the store writes
/// them into chunks, the later of two writes of a time kept, and their
/// minutes and hours marked for rollups and packing.
#[test]
fn open_samples_logged_before_a_stop_are_in_chunks_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let h0 = 20 * HOUR;
    {
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", h0 + 1_000, 1.0), r(2, "aq-2", h0 + 2_000, 2.0), r(3, "aq-1", h0 + 61_000, 3.0)], vec![])).unwrap();
        st.write(&w(vec![r(4, "aq-1", h0 + 1_000, 10.0)], vec![(SeqSpace::new("gw-1", 0), Progress { contiguous: 4, above: vec![], heard_ms: 9 })])).unwrap();
        st.sync().unwrap();
        assert_eq!((raw_entries(&st, b'O'), raw_entries(&st, b'X'), raw_entries(&st, b'D')), (2, 0, 0), "two log entries, nothing in chunks yet");
    }
    let st = RedbStore::open(dir.path()).unwrap();
    assert_eq!((raw_entries(&st, b'O'), raw_entries(&st, b'X'), raw_entries(&st, b'D'), raw_entries(&st, b'U')), (0, 3, 3, 2), "aq-1 in two minutes, aq-2 in one");
    assert_eq!(values(&st, "aq-1"), [(h0 + 1_000, 10.0), (h0 + 61_000, 3.0)]);
    assert_eq!(values(&st, "aq-2"), [(h0 + 2_000, 2.0)]);
    assert_eq!(st.first_ts("aq-1", "pm25").unwrap(), Some(h0 + 1_000));
    assert_eq!(st.roll_up().unwrap(), 3);
    assert_eq!(st.rollups("aq-1", "pm25", Level::Hour, h0, h0).unwrap()[0].sum, 13.0);
    assert_eq!(st.pack(h0 + HOUR + PACK_AFTER_MS).unwrap(), 2);
    assert_eq!(values(&st, "aq-1"), [(h0 + 1_000, 10.0), (h0 + 61_000, 3.0)]);
}

/// The write that brings the open samples to the limit writes them all,
/// its own too, into chunks in its own transaction, its gateway's progress
/// with them; the log is empty after it.
#[test]
fn the_write_that_fills_the_open_samples_settles_them_with_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { open_samples: 10, ..StoreOptions::default() };
    let gw = SeqSpace::new("gw-1", 0);
    let progress = |n: u64| vec![(gw.clone(), Progress { contiguous: n, above: vec![], heard_ms: 1 })];
    {
        let st = RedbStore::open_with(dir.path(), options.clone()).unwrap();
        st.write(&w((0..6).map(|i| r(i + 1, "aq-1", 1_000 * i as i64, i as f64)).collect(), progress(6))).unwrap();
        assert_eq!((raw_entries(&st, b'O'), raw_entries(&st, b'X')), (1, 0));
        st.write(&w((6..12).map(|i| r(i + 1, "aq-1", 1_000 * i as i64, i as f64)).collect(), progress(12))).unwrap();
        assert_eq!((raw_entries(&st, b'O'), raw_entries(&st, b'X')), (0, 1), "one chunk: one series, one minute");
        st.sync().unwrap();
    }
    let st = RedbStore::open_with(dir.path(), options).unwrap();
    assert_eq!(st.progress().unwrap(), progress(12));
    assert_eq!(values(&st, "aq-1"), (0..12).map(|i| (1_000 * i, i as f64)).collect::<Vec<_>>());
}
