#!/usr/bin/env python3
"""Writes N synthetic scored pairs with log-prob columns, for the select-margin benchmark.

Columns: prompt_id (16 hex digits, ascending), prompt, chosen, rejected (short strings),
score_chosen, score_rejected (external reward, 1-10 scale), policy_logp_chosen,
ref_logp_chosen, policy_logp_rejected, ref_logp_rejected (summed log-probs); 0.1 % of the
pairs get a NaN log-prob, so some are not eligible. Deterministic (seeded).

    make_margin_pairs.py --pairs 10000000 --shards 8 --output DIR
"""

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    per = -(-args.pairs // args.shards)
    for shard in range(args.shards):
        lo, hi = shard * per, min(args.pairs, (shard + 1) * per)
        n = hi - lo
        ids = np.char.mod("%016x", np.arange(lo, hi))
        score_rejected = np.round(rng.uniform(1, 8, n) * 2) / 2
        score_chosen = np.minimum(10, score_rejected + np.round(rng.exponential(1.5, n) * 2) / 2)
        ref_c = rng.normal(-250, 60, n)
        ref_r = rng.normal(-250, 60, n)
        pol_c = ref_c + rng.normal(0.5, 4, n)
        pol_r = ref_r + rng.normal(-0.5, 4, n)
        pol_c[rng.random(n) < 0.001] = np.nan
        table = pa.table({
            "prompt_id": pa.array(ids, pa.string()),
            "prompt": pa.array(np.char.add("prompt ", ids), pa.string()),
            "chosen": pa.array(np.char.add("chosen ", ids), pa.string()),
            "rejected": pa.array(np.char.add("rejected ", ids), pa.string()),
            "score_chosen": score_chosen,
            "score_rejected": score_rejected,
            "policy_logp_chosen": pol_c,
            "ref_logp_chosen": ref_c,
            "policy_logp_rejected": pol_r,
            "ref_logp_rejected": ref_r,
        })
        pq.write_table(table, os.path.join(args.output, f"shard-{shard:05d}.parquet"),
                       row_group_size=1 << 20)


if __name__ == "__main__":
    main()
