//! The checkpoint a pass advances: batches finish out of order, the
//! watermark only moves over the prefix of those all done.

use std::collections::BTreeMap;

use manna_store::{Checkpoint, CheckpointKey, Counts, RowId};

/// The checkpoint: the end of the longest prefix of batches all done, with
/// their counts. Batches finish out of order with several workers; a batch's
/// write carries the watermark as it was before it, so a checkpoint never
/// claims a batch whose write has not committed.
pub(crate) struct Watermark {
    key: Option<CheckpointKey>,
    next_seq: u64,
    last_id: Option<RowId>,
    counts: Counts,
    done: BTreeMap<u64, (RowId, Counts)>,
}

impl Watermark {
    pub(crate) fn new(key: Option<CheckpointKey>, last_id: Option<RowId>, counts: Counts) -> Self {
        Watermark {
            key,
            next_seq: 0,
            last_id,
            counts,
            done: BTreeMap::new(),
        }
    }

    pub(crate) fn checkpoint(&self) -> Option<Checkpoint> {
        self.key.as_ref().map(|key| Checkpoint {
            key: key.clone(),
            last_id: self.last_id.clone(),
            counts: self.counts,
        })
    }

    pub(crate) fn complete(&mut self, seq: u64, end: RowId, counts: Counts) {
        self.done.insert(seq, (end, counts));
        while let Some((end, counts)) = self.done.remove(&self.next_seq) {
            self.last_id = Some(end);
            self.counts += counts;
            self.next_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CheckpointKey {
        CheckpointKey {
            column: "t.c".into(),
            partition: "shard 0/1".into(),
            run: "to fernet".into(),
        }
    }

    #[test]
    fn watermark_advances_over_contiguous_batches_only() {
        let mut w = Watermark::new(Some(key()), None, Counts::default());
        let c = |n| Counts {
            scanned: n,
            ..Counts::default()
        };
        let last = |w: &Watermark| w.checkpoint().and_then(|c| c.last_id);
        w.complete(1, RowId::Int(20), c(10));
        assert_eq!(last(&w), None, "batch 0 not done yet");
        w.complete(0, RowId::Int(10), c(10));
        assert_eq!(last(&w), Some(RowId::Int(20)));
        assert_eq!(w.checkpoint().map(|c| c.counts.scanned), Some(20));
        w.complete(3, RowId::Int(40), c(5));
        assert_eq!(last(&w), Some(RowId::Int(20)));
        w.complete(2, RowId::Int(30), c(5));
        assert_eq!(last(&w), Some(RowId::Int(40)));
        assert_eq!(w.checkpoint().map(|c| c.counts.scanned), Some(30));
    }
}
