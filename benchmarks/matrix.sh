#!/usr/bin/env bash
# The BENCHMARKS.md matrix: CLGSI and ConKI at MOSI, MOSEI and SIMS shapes (synthetic files of
# the real shapes), with the packaged MiniLM text encoder. Usage:
#   benchmarks/matrix.sh OUT_DIR [STEPS]
# SAMPLERS="bucket" (or "random") runs one sampler only; MODELS and DATASETS likewise.
# Writes OUT_DIR/<model>-<dataset>-<sampler>.json (the last line of `msakit bench --json`).
set -euo pipefail
out=${1:?usage: benchmarks/matrix.sh OUT_DIR [STEPS]}
steps=${2:-6}
mkdir -p "$out"
export HF_HUB_OFFLINE=1
declare -A sizes=([mosi]="1284 229 686" [sims]="1368 456 457" [mosei]="16326 1871 4659")
for dataset in ${DATASETS:-mosi sims mosei}; do
  data="$out/$dataset.npz"
  if [ ! -f "$data" ]; then
    msakit synth --like "$dataset" --n ${sizes[$dataset]} --out "$out/$dataset.pkl"
    msakit convert "$out/$dataset.pkl" --out "$data"
    rm "$out/$dataset.pkl"
  fi
  for model in ${MODELS:-clgsi conki}; do
    for sampler in ${SAMPLERS:-random bucket}; do
      msakit bench --model "$model" --dataset "$dataset" --data "$data" --max-steps "$steps" \
        --text-encoder minilm --set sampler="$sampler" --json | tail -n 1 > "$out/$model-$dataset-$sampler.json"
      cat "$out/$model-$dataset-$sampler.json"
    done
  done
done
