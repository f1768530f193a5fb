"""Checks an experiment's output against a second implementation written from EXPERIMENTS.md.

    check_experiment.py OUTPUT_DIR

For every (arm, seed) run under OUTPUT_DIR it recomputes, in plain Python:

* the gold reward of every held-out sample (longest common subsequence with the sorted
  letters over the longer length) and compares it with the table's `all_gold_rewards`;
* the run's mean gold reward and its win rate against the SFT start (sample k against sample
  k, ties one half), and the arm's mean and 95 % t-interval over seeds, against the summary.

It also checks that degenerate samples exist where the sampler was asked for them, and that
every figure is finite. Prints "ok (N checks)" or fails with the first difference.
"""

import glob
import json
import math
import os
import sys

import pyarrow.parquet as pq

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]
checks = 0


def check(condition, message):
    global checks
    checks += 1
    if not condition:
        sys.exit(f"FAIL: {message}")


def read(stage_dir):
    manifest = json.load(open(os.path.join(stage_dir, "_manifest.json")))
    files = [os.path.join(stage_dir, p["path"]) for p in manifest["parts"]]
    rows = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return manifest, rows


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[len(a)][len(b)]


def gold(prompt, response):
    answer = "".join(sorted(prompt[len("sort: "):].strip(" \t\n\x0c\r")))
    response = response.strip(" \t\n\x0c\r")  # ASCII whitespace only, as the spec says
    longer = max(len(answer), len(response))
    return 0.0 if longer == 0 else lcs(answer, response) / longer


def gold_table(stage_dir):
    _, rows = read(stage_dir)
    out = {}
    for r in rows:
        mine = [gold(r["prompt"], t) for t in r["all_generated_responses"]]
        theirs = r["all_gold_rewards"]
        check(len(mine) == len(theirs), f"{stage_dir} {r['prompt_id']}: list lengths")
        for m, t in zip(mine, theirs):
            check(abs(m - t) < 1e-12, f"{stage_dir} {r['prompt_id']}: gold {t} vs {m}")
        out[r["prompt_id"]] = mine
    return out


def interval(values):
    s = len(values)
    mean = sum(values) / s
    if s < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (s - 1))
    half = T975[s - 2] * sd / math.sqrt(s)
    return mean, mean - half, mean + half


def main(root):
    manifest, _ = read(os.path.join(root, "summary"))
    config = manifest["config"]
    arms = {a["name"]: a for a in manifest["stats"]["arms"]}
    check(len(arms) == len(config["arms"]), "one summary entry per arm")
    for arm in config["arms"]:
        golds, wins = [], []
        for run in arm["runs"]:
            policy = gold_table(run["eval"])
            start = gold_table(run["baseline"])
            g, w, count = 0.0, 0.0, 0
            for pid, samples in policy.items():
                for p, b in zip(samples, start[pid]):
                    g += p
                    w += 1.0 if p > b else 0.5 if p == b else 0.0
                    count += 1
            golds.append(g / count)
            wins.append(w / count)
        entry = arms[arm["name"]]
        for key, values in (("gold", golds), ("win_rate", wins)):
            mean, lo, hi = interval(values)
            for name, mine in (("mean", mean), ("lo", lo), ("hi", hi)):
                theirs = entry[key][name]
                check(math.isfinite(theirs), f"{arm['name']}: {key}.{name} is not finite")
                check(abs(theirs - mine) < 1e-9, f"{arm['name']}: {key}.{name} {theirs} vs {mine}")
    degenerate = 0
    for responses in glob.glob(os.path.join(root, "seed-*", "responses")):
        _, rows = read(responses)
        degenerate += sum(f.startswith("degenerate-") for r in rows for f in r["finish_reasons"])
    check(degenerate > 0, "the sampler produced degenerate responses")
    print(f"ok ({checks} checks)")


if __name__ == "__main__":
    main(sys.argv[1])
