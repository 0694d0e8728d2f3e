#!/usr/bin/env bash
# GPU speed report: TSN, TSM and TDN on ResNet-50, 8 segments x 224x224, bf16 autocast, channels_last,
# each model eager and through torch.compile (Triton), latency at batch 1, throughput at batches 32
# and 64, a training step and peak memory; all interleaved in one process.
#
#   bash benchmarks/gpu.sh [OUTPUT_DIR]        (default docs/speed_bench/gpu_r50_224_bf16)
#
# Needs torch with CUDA, timm, safetensors, huggingface_hub, tqdm and matplotlib. It runs from the
# checkout without installing (python -m tdnzoo), or after `pip install --no-deps -e .`; without
# fvcore the report says GFLOPs were not counted (pass a fvcore wheel to count them).
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-docs/speed_bench/gpu_r50_224_bf16}
export PYTHONUNBUFFERED=1
python3 -m tdnzoo bench \
  --device cuda --dtype bf16 --channels-last --compile \
  --models tsn_resnet50,tsm_resnet50,tdn_resnet50 --num-segments 8 --size 224 \
  --batch 1 --throughput-batch 32,64 --rounds 20 --train-rounds 10 --warmup 3 \
  --no-progress --output "$output"
