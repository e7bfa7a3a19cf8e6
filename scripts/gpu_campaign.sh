#!/usr/bin/env bash
# The GPU weights campaign as one prepared command (config/campaign_gpu.yaml).
#   bash scripts/gpu_campaign.sh prepare   # on this machine: copy ../shared/data/photos into .gpu_data/photos
#   bash scripts/gpu_campaign.sh run       # on the GPU machine (device tool, carry .gpu_data): training stages,
#                                          # then the weights and the campaign state into $OUT
# Then, back here: put the returned files under experiments/ and run the report and card stages on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    mkdir -p .gpu_data
    grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
    rm -rf .gpu_data/photos && cp -r "${PHOTOS:-../shared/data/photos}" .gpu_data/photos
    du -sh .gpu_data ;;
  run)
    export PYTHONUNBUFFERED=1 SUPERPOINT_EXPER_DIR="${SUPERPOINT_EXPER_DIR:-experiments}"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 -m superpoint_training.campaign config/campaign_gpu.yaml --until superpoint
    out="${OUT:-outputs/gpu_campaign}"
    mkdir -p "$out"
    cp "$SUPERPOINT_EXPER_DIR"/campaign_gpu_superpoint/weights.pth "$out"/superpoint_weights.pth
    cp "$SUPERPOINT_EXPER_DIR"/campaign_gpu/campaign_state.yaml "$out"/
    for stage in shapes magicpoint_photos; do
      [ -f "$SUPERPOINT_EXPER_DIR/campaign_gpu_$stage/weights.pth" ] && cp "$SUPERPOINT_EXPER_DIR/campaign_gpu_$stage/weights.pth" "$out/${stage}_weights.pth"
    done
    ls -la "$out" ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
