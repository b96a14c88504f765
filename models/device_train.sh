#!/usr/bin/env bash
# One training continuation on the device machine (an NVIDIA GPU and 16 cores), from the shipped
# weights, on photos carried inside the repository. Prepare here, once:
#     python -m models.device_carry runs/pack ../shared/data/val/cbsd68 carry
# then call the device tool with command "bash models/device_train.sh", carry ["carry"],
# timeout_s 600. The workdir is $OUT/run, so what is written there comes back even when the call is
# cut short: best.pt (the best validated EMA weights, batch-norm statistics estimated) and
# train_log.jsonl (checkpoint.pt is too large to come back), with $OUT/stdout.log. Here, put
# best.pt in a workdir and
#     python -m models.choose_decoding runs/dev/best.pt --int8
#     python -m models.train --workdir runs/dev --export ...   (as in MODEL_CARD.md)
# The carried validation photos are lossy copies: they rank checkpoints; measure the result here.
# Settings through the environment: MINUTES of training (6; validations and start-up come on top),
# BATCH (128), LR (1e-3), LOADERS (14), DEVICE (cuda), INIT (models/default.onnx; empty =
# from scratch), and extra models.train options as arguments.
set -euo pipefail
: "${OUT:?run this through the device tool, which sets OUT}"
MINUTES=${MINUTES:-6} BATCH=${BATCH:-128} LR=${LR:-1e-3} LOADERS=${LOADERS:-14} DEVICE=${DEVICE:-cuda}
INIT=${INIT-models/default.onnx}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
side=$(python3 -c "import cv2, glob; print(cv2.imread(sorted(glob.glob('carry/train/*.webp'))[0]).shape[0])")
python3 -m models.training_pack carry/train runs/pack --side "$side"
init=()
if [ -n "$INIT" ]; then init=(--init-from "$INIT"); fi
python3 -m models.train --device "$DEVICE" --loaders "$LOADERS" --threads 4 --pack runs/pack --val carry/val \
    --workdir "$OUT/run" "${init[@]}" --minutes "$MINUTES" --batch "$BATCH" --lr "$LR" --val-minutes 2 "$@" \
    2>&1 | tee "$OUT/stdout.log"
