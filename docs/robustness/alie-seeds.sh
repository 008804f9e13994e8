#!/bin/bash
# Issue 5's done-when commands over several seeds (docs/robustness.md, section 1).
# Usage: docs/robustness/alie-seeds.sh OUT SEED...   (about 1 min a run on 2 cores, 6 runs a seed)
# Prints one line per run; OUT/s<SEED>-<key>/summary.json holds each run (keys as in
# docs/robustness/alie-seeds.json).
set -u
out=${1:?usage: $0 OUT SEED...}; shift
mkdir -p "$out"
base="--nodes 12 --cluster-size 2 --rounds 5"
for seed in "$@"; do
  for cfg in "clean|" \
             "clean-trimmed-mean-f2|--rule trimmed-mean --f 2" \
             "coll-trimmed-mean|--byzantine 2:alie --rule trimmed-mean" \
             "coll-mean|--byzantine 2:alie --rule mean" \
             "omni-trimmed-mean|--byzantine 2:alie --omniscient --rule trimmed-mean" \
             "omni-mean|--byzantine 2:alie --omniscient --rule mean"; do
    key=${cfg%%|*}; args=${cfg#*|}
    dir=$out/s$seed-$key
    # shellcheck disable=SC2086 # args is a list of options
    phalanx testbed run --seed "$seed" $base $args --out "$dir" > "$dir.log" 2>&1
    echo "seed $seed $key: $(tail -1 "$dir.log")"
  done
done
