//! What a corpus run did, for DIR/report.json: records read, documents and characters kept, the
//! records skipped by reason (damaged or non-HTML input), for every stage and rule the documents
//! and characters it removed, and the seconds spent per stage (summed over the ranks' threads).
//! Each input's report is kept with its work file, so a restarted run reports the whole run.

use mpi::collective::Root;
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Documents, their characters (of the text at that stage; 0 before there is text) and bytes (of
/// the HTTP payload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub documents: u64,
    pub characters: u64,
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.documents += o.documents;
        self.characters += o.characters;
        self.bytes += o.bytes;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub inputs: u64,
    /// Response records read (kept, removed or skipped).
    pub records_read: u64,
    pub documents_kept: u64,
    pub characters_kept: u64,
    /// Records (or file tails) skipped as damaged or not HTML, by reason.
    pub skipped: BTreeMap<String, Counts>,
    /// Stage -> rule -> what it removed.
    pub removed: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Stage -> seconds.
    pub seconds: BTreeMap<String, f64>,
}

impl Report {
    pub fn skip(&mut self, reason: &str, bytes: u64) {
        let c = self.skipped.entry(reason.to_string()).or_default();
        c.documents += 1;
        c.bytes += bytes;
    }

    pub fn remove(&mut self, stage: &str, rule: &str, characters: u64, bytes: u64) {
        let c = self.removed.entry(stage.to_string()).or_default().entry(rule.to_string()).or_default();
        c.add(&Counts { documents: 1, characters, bytes });
    }

    pub fn time(&mut self, stage: &str, seconds: f64) {
        *self.seconds.entry(stage.to_string()).or_default() += seconds;
    }

    pub fn merge(&mut self, o: &Report) {
        self.inputs += o.inputs;
        self.records_read += o.records_read;
        self.documents_kept += o.documents_kept;
        self.characters_kept += o.characters_kept;
        for (k, c) in &o.skipped {
            self.skipped.entry(k.clone()).or_default().add(c);
        }
        for (stage, rules) in &o.removed {
            let mine = self.removed.entry(stage.clone()).or_default();
            for (rule, c) in rules {
                mine.entry(rule.clone()).or_default().add(c);
            }
        }
        for (k, s) in &o.seconds {
            *self.seconds.entry(k.clone()).or_default() += s;
        }
    }

    /// Documents removed by every rule together.
    pub fn documents_removed(&self) -> u64 {
        self.removed.values().flat_map(|r| r.values()).map(|c| c.documents).sum()
    }

    /// Every rank's report summed on rank 0 (None elsewhere). Collective.
    pub fn gather(&self, comm: &SimpleCommunicator) -> Option<Report> {
        let mine = serde_json::to_vec(self).expect("a report serialises");
        let root = comm.process_at_rank(0);
        let len = mine.len() as i32;
        if comm.rank() != 0 {
            root.gather_into(&len);
            root.gather_varcount_into(&mine[..]);
            return None;
        }
        let mut lens = vec![0i32; comm.size() as usize];
        root.gather_into_root(&len, &mut lens[..]);
        let displs: Vec<i32> = lens.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
        let mut all = vec![0u8; lens.iter().map(|&n| n as usize).sum()];
        root.gather_varcount_into_root(&mine[..], &mut PartitionMut::new(&mut all[..], &lens[..], &displs[..]));
        let mut total = Report::default();
        for (&d, &n) in displs.iter().zip(&lens) {
            let r: Report = serde_json::from_slice(&all[d as usize..(d + n) as usize]).expect("a report parses");
            total.merge(&r);
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_merge_by_key() {
        let mut a = Report::default();
        a.records_read = 3;
        a.skip("warc: truncated gzip", 10);
        a.remove("filters", "ng_words", 500, 2000);
        a.time("extract", 1.5);
        let mut b = a.clone();
        b.remove("lang", "not_japanese", 100, 300);
        b.merge(&a);
        assert_eq!(b.records_read, 6);
        assert_eq!(b.skipped["warc: truncated gzip"], Counts { documents: 2, characters: 0, bytes: 20 });
        assert_eq!(b.removed["filters"]["ng_words"], Counts { documents: 2, characters: 1000, bytes: 4000 });
        assert_eq!(b.documents_removed(), 3);
        assert_eq!(b.seconds["extract"], 3.0);
    }
}
