//! The offline queue: packets the node could not hand to the broker, kept on disk in order
//! until the link is back (and across a restart of the node).
//!
//! A folder of segment files, `<sequence>.seg`, each at most [`SEGMENT_BYTES`] of records:
//! ```text
//! 0  4  payload length P (u32 LE)
//! 4  2  topic length T (u16 LE)
//! 6  4  CRC-32C over the topic and the payload
//! 10 T  topic (UTF-8)
//! .. P  payload
//! ```
//! Segments are drained oldest first and deleted once read back. A record cut short or whose
//! CRC fails (a write torn by a power cut) ends its segment and is counted as corrupt.
//! The queue holds at most `max_bytes`; what does not fit is dropped and counted, so the queue
//! stays one unbroken run of packets from the start of the outage.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest segment file; a drain step reads one segment.
pub const SEGMENT_BYTES: u64 = 1 << 20;
const RECORD_HEADER: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("offline queue {path}: {error}")]
pub struct SpoolError {
    pub path: String,
    pub error: std::io::Error,
}

/// One queued packet: its topic and payload.
pub type Record = (String, Vec<u8>);

/// Counters the node reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Packets waiting, and their bytes on disk.
    pub queued: u64,
    pub queued_bytes: u64,
    /// Packets that did not fit in the bound.
    pub dropped: u64,
    /// Packets delivered from the queue.
    pub drained: u64,
    /// Records found damaged when read back.
    pub corrupt: u64,
}

/// A bounded, ordered, on-disk queue of `(topic, payload)` records.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment numbers on disk, oldest first, with their sizes and record counts.
    segments: VecDeque<(u64, u64, u64)>,
    writer: Option<File>,
    counters: SpoolCounters,
}

impl Spool {
    /// Opens (creating) the queue in `dir`, picking up segments a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let fail = |error| SpoolError {
            path: dir.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(fail)?.len();
            found.push((seq, bytes, count_records(&entry.path())));
        }
        found.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segments: found.into(),
            writer: None,
            counters: SpoolCounters::default(),
        };
        spool.counters.queued = spool.segments.iter().map(|s| s.2).sum();
        spool.counters.queued_bytes = spool.segments.iter().map(|s| s.1).sum();
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.counters.queued == 0
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.seg"))
    }

    /// Appends a record; `Ok(false)` when the bound leaves no room (the record is dropped).
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> Result<bool, SpoolError> {
        let record = encode_record(topic, payload);
        if self.counters.queued_bytes + record.len() as u64 > self.max_bytes {
            self.counters.dropped += 1;
            return Ok(false);
        }
        let open_new = match (self.segments.back(), &self.writer) {
            (Some(&(_, bytes, _)), Some(_)) => bytes + record.len() as u64 > SEGMENT_BYTES,
            _ => true,
        };
        if open_new {
            let seq = self.segments.back().map_or(1, |s| s.0 + 1);
            let path = self.path(seq);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| SpoolError {
                    path: path.display().to_string(),
                    error,
                })?;
            self.writer = Some(file);
            self.segments.push_back((seq, 0, 0));
        }
        let path = self.path(self.segments.back().expect("a segment is open").0);
        let (_, bytes, records) = self.segments.back_mut().expect("a segment is open");
        self.writer
            .as_mut()
            .expect("a segment is open")
            .write_all(&record)
            .map_err(|error| SpoolError {
                path: path.display().to_string(),
                error,
            })?;
        *bytes += record.len() as u64;
        *records += 1;
        self.counters.queued += 1;
        self.counters.queued_bytes += record.len() as u64;
        Ok(true)
    }

    /// Takes the oldest segment's records (in order) and deletes it; `None` when empty.
    pub fn pop_segment(&mut self) -> Result<Option<Vec<Record>>, SpoolError> {
        let Some((seq, bytes, records)) = self.segments.pop_front() else {
            return Ok(None);
        };
        if self.segments.is_empty() {
            // The segment being written: close it, a new one opens on the next push.
            self.writer = None;
        }
        let path = self.path(seq);
        let fail = |error| SpoolError {
            path: path.display().to_string(),
            error,
        };
        let data = std::fs::read(&path).map_err(fail)?;
        let (out, corrupt) = decode_records(&data);
        std::fs::remove_file(&path).map_err(fail)?;
        self.counters.queued -= records.min(self.counters.queued);
        self.counters.queued_bytes -= bytes.min(self.counters.queued_bytes);
        self.counters.drained += out.len() as u64;
        self.counters.corrupt += corrupt;
        Ok(Some(out))
    }
}

fn encode_record(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32c::crc32c(topic.as_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    let mut record = Vec::with_capacity(RECORD_HEADER + topic.len() + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(topic.as_bytes());
    record.extend_from_slice(payload);
    record
}

/// The intact records of a segment, and how many damaged records ended it (0 or 1).
fn decode_records(mut data: &[u8]) -> (Vec<Record>, u64) {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(header) = data.get(..RECORD_HEADER) else {
            return (out, 1);
        };
        let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let topic_len = usize::from(u16::from_le_bytes([header[4], header[5]]));
        let crc = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
        let Some(body) = data.get(RECORD_HEADER..RECORD_HEADER + topic_len + payload_len) else {
            return (out, 1);
        };
        let (topic, payload) = body.split_at(topic_len);
        let ok = crc32c::crc32c_append(crc32c::crc32c(topic), payload) == crc;
        match (ok, std::str::from_utf8(topic)) {
            (true, Ok(topic)) => out.push((topic.to_owned(), payload.to_vec())),
            _ => return (out, 1),
        }
        data = &data[RECORD_HEADER + body.len()..];
    }
    (out, 0)
}

fn count_records(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |data| decode_records(&data).0.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lydlr-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn drain(spool: &mut Spool) -> Vec<Record> {
        let mut all = Vec::new();
        while let Some(records) = spool.pop_segment().unwrap() {
            all.extend(records);
        }
        all
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_a_restart() {
        let dir = temp_dir("order");
        let mut spool = Spool::open(&dir, 64 << 20).unwrap();
        let payload = |i: u32| vec![(i % 251) as u8; 40_000 + i as usize];
        for i in 0..60 {
            assert!(spool.push(&format!("t/{i}"), &payload(i)).unwrap());
        }
        assert!(spool.segments.len() > 2, "several segments");
        let first = spool.pop_segment().unwrap().unwrap();
        let taken = first.len();
        drop(spool);
        // A new process picks up where the old one stopped, and appends after it.
        let mut spool = Spool::open(&dir, 64 << 20).unwrap();
        assert_eq!(spool.counters().queued, 60 - taken as u64);
        spool.push("t/60", &payload(60)).unwrap();
        let rest = drain(&mut spool);
        let all: Vec<_> = first.into_iter().chain(rest).collect();
        assert_eq!(all.len(), 61);
        for (i, (topic, bytes)) in all.iter().enumerate() {
            assert_eq!(topic, &format!("t/{i}"));
            assert_eq!(bytes, &payload(i as u32));
        }
        assert!(spool.is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_bound_drops_and_counts_and_a_torn_record_ends_its_segment() {
        let dir = temp_dir("bound");
        let mut spool = Spool::open(&dir, 1000).unwrap();
        let mut kept = 0;
        for _ in 0..20 {
            kept += usize::from(spool.push("t", &[7; 100]).unwrap());
        }
        assert_eq!(kept, 9, "9 records of 111 bytes fit in 1000");
        assert_eq!(spool.counters().dropped, 11);
        drop(spool);
        // Cut the last record short, as a power cut during the write would.
        let segment = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let data = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &data[..data.len() - 5]).unwrap();
        let mut spool = Spool::open(&dir, 1000).unwrap();
        let back = drain(&mut spool);
        assert_eq!(back.len(), 8);
        assert_eq!(spool.counters().corrupt, 1);
        // A flipped bit fails the CRC.
        let mut record = encode_record("t", &[1, 2, 3]);
        let last = record.len() - 1;
        record[last] ^= 4;
        assert_eq!(decode_records(&record), (Vec::new(), 1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
