//! What part of the model this rank holds: its tensor-parallel share of every layer (heads, FFN
//! columns, vocabulary rows incl. padding) and its pipeline chunks (layer ranges of the virtual
//! stages it runs, with the embedding on virtual stage 0 and the final norm + LM head + loss on the
//! last one). With one TP rank and one pipeline stage this is the whole model in one chunk.

use super::params::{padded_vocab, ParamTable};
use crate::config::ModelConfig;
use crate::pipeline::schedule::stage_layers;
use anyhow::Result;
use std::ops::Range;

/// This rank's share of each layer under tensor parallelism (one KV head, replicated, when there
/// are more TP ranks than KV heads).
#[derive(Clone, Copy, Debug)]
pub struct LocalDims {
    pub tp: usize,
    pub tp_rank: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    /// Vocabulary rows of the shard (padded vocabulary / tp).
    pub vocab: usize,
    /// First global vocabulary row of the shard.
    pub vocab_start: usize,
    /// Rows of the shard that are real tokens (not padding).
    pub valid_vocab: usize,
}

impl LocalDims {
    pub fn new(cfg: &ModelConfig, tp: usize, tp_rank: usize) -> Self {
        let vocab = padded_vocab(cfg.vocab_size, tp, cfg.vocab_divisible_by) / tp;
        let vocab_start = tp_rank * vocab;
        LocalDims {
            tp,
            tp_rank,
            heads: cfg.num_heads / tp,
            kv_heads: cfg.num_kv_heads / tp.min(cfg.num_kv_heads),
            ffn: cfg.ffn_hidden_size / tp,
            vocab,
            vocab_start,
            valid_vocab: cfg.vocab_size.saturating_sub(vocab_start).min(vocab),
        }
    }
}

/// One model chunk run by this rank (a virtual pipeline stage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub layers: Range<usize>,
    /// Holds the embedding (virtual stage 0).
    pub embed: bool,
    /// Holds the final norm, the LM head and the loss (the last virtual stage).
    pub head: bool,
}

/// The chunks of pipeline rank `stage` among `pp` stages with `vpp` virtual stages each.
pub fn chunks(num_layers: usize, pp: usize, vpp: usize, stage: usize) -> Result<Vec<Chunk>> {
    Ok(stage_layers(num_layers, pp, vpp, stage)?
        .into_iter()
        .enumerate()
        .map(|(c, layers)| Chunk { layers, embed: stage == 0 && c == 0, head: stage == pp - 1 && c == vpp - 1 })
        .collect())
}

/// Which parameters of the table live on a rank with these chunks.
pub fn owned_params(table: &ParamTable, chunks: &[Chunk]) -> Vec<bool> {
    let mut owned = vec![false; table.specs.len()];
    for ch in chunks {
        if ch.embed {
            owned[table.embed] = true;
        }
        if ch.head {
            owned[table.final_norm] = true;
            owned[table.lm_head] = true;
        }
        for l in ch.layers.clone() {
            let ids = &table.layers[l];
            for p in [ids.input_norm, ids.q, ids.k, ids.v, ids.o, ids.post_norm, ids.gate, ids.up, ids.down] {
                owned[p] = true;
            }
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_parameter_lives_on_exactly_one_stage() {
        let cfg = Config::load("tiny", &["model.num_layers=6".into()]).unwrap().model;
        let table = ParamTable::llama(&cfg);
        for (pp, vpp) in [(1, 1), (2, 1), (2, 3), (3, 2)] {
            let mut count = vec![0; table.specs.len()];
            for s in 0..pp {
                let ch = chunks(6, pp, vpp, s).unwrap();
                for (p, o) in owned_params(&table, &ch).iter().enumerate() {
                    count[p] += *o as usize;
                }
            }
            assert!(count.iter().all(|&c| c == 1), "pp {pp} vpp {vpp}: {count:?}");
        }
        let last = chunks(6, 2, 3, 1).unwrap();
        assert!(last[2].head && !last[0].head && !last[2].embed);
        assert_eq!(last[0].layers, 1..2);
    }
}
