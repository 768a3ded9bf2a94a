#!/bin/bash
# evaluate one model: union test snippets, the three variants (snippets), real_dev dtw
# usage: benchmarks/realworld_eval.sh NAME MODEL [OUT]  (OUT default runs/realworld; corpora: BOTH, VARIANTS, REAL_DEV env vars)
cd "$(dirname "$0")/.." && source .venv/bin/activate
n=$1; M=$2; O=${3:-runs/realworld}/$n; mkdir -p "$O"
BOTH=${BOTH:-/work/data/both}; VARIANTS=${VARIANTS:-/work/data/both_variants}; REAL_DEV=${REAL_DEV:-/work/data/real_dev}
for v in clean scanned performed scanned+performed; do
  C=$BOTH; [ $v != clean ] && C=$VARIANTS/$v
  [ -f "$O/snippets-$v.json" ] || audiosheet evaluate snippets --corpus $C --split test --model $M --pairs 2000 --json "$O/snippets-$v.json" --quiet
done
[ -f $O/real_dev.json ] || audiosheet evaluate folder $REAL_DEV --model $M --json $O/real_dev.json --quiet
echo EVAL DONE $n
