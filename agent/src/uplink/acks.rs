//! Which acks the agent believes. An ack deletes readings, so one the agent
//! cannot vouch for is ignored (and counted): one for another outbox epoch
//! (the collector's progress of an older outbox on this gateway), or one
//! above the highest seq this run has sent. The latter would delete readings
//! the collector never received, which a broken collector, a replayed
//! retained message, or a forged ack without batch keys could ask for.
//! Ignoring a true ack costs nothing: the next batch resends, the collector
//! drops the duplicates and acks again.

/// What to do with an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delete every reading up to this seq.
    Delete(u64),
    WrongEpoch {
        got: u64,
        ours: u64,
    },
    Unsent {
        seq: u64,
        sent_upto: u64,
    },
}

/// `sent_upto`: the highest seq published since the agent started.
pub fn judge(ack_epoch: u64, seq: u64, our_epoch: u64, sent_upto: u64) -> Verdict {
    if ack_epoch != our_epoch {
        Verdict::WrongEpoch { got: ack_epoch, ours: our_epoch }
    } else if seq > sent_upto {
        Verdict::Unsent { seq, sent_upto }
    } else {
        Verdict::Delete(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acks_of_our_epoch_for_seqs_we_sent_delete_anything() {
        assert_eq!(judge(7, 10, 7, 10), Verdict::Delete(10));
        assert_eq!(judge(7, 3, 7, 10), Verdict::Delete(3));
        assert_eq!(judge(7, 11, 7, 10), Verdict::Unsent { seq: 11, sent_upto: 10 });
        assert_eq!(judge(7, u64::MAX, 7, 10), Verdict::Unsent { seq: u64::MAX, sent_upto: 10 });
        assert_eq!(judge(8, 5, 7, 10), Verdict::WrongEpoch { got: 8, ours: 7 });
        // Nothing sent yet in this run: nothing to delete.
        assert_eq!(judge(7, 1, 7, 0), Verdict::Unsent { seq: 1, sent_upto: 0 });
    }
}
