#!/usr/bin/env bash
# How wall time and peak memory grow with the number of images, for the commands that touch every image:
# prepare, encode and attribute-vectors over toy faces; then interpolate's frames/s at 64 px for growing
# frame counts. Whole commands, timed by /usr/bin/time (peak resident set, as `top` shows it).
#   benchmarks/scaling.sh [COUNT ...]        default: 1000 10000 50000
# Env: SCALING_DIR (work folder, default /tmp/latentlab-scaling), SIZE (toy-face side, default 64),
#      FRAMES (interpolation frames per segment, default "30 120 480"). Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
LL=${LATENTLAB:-$PWD/.venv/bin/latentlab}
work=${SCALING_DIR:-/tmp/latentlab-scaling}
size=${SIZE:-64}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 10000 50000)
read -r -a frames <<< "${FRAMES:-30 120 480}"
mkdir -p "$work"
export LATENTLAB_MODELS="$work/models" LATENTLAB_ATTRIBUTES="$work/attributes" LATENTLAB_DATA="$work/data"
export LATENTLAB_CACHE_DIR="$work/cache"

# measure LABEL COUNT COMMAND...: time one whole command, print "| LABEL | COUNT | seconds | peak MB |"
measure() {
  local label=$1 count=$2; shift 2
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > "$work/last.log" 2>&1 || {
    echo "failed: $*" >&2; tail -3 "$work/last.log" >&2; exit 1; }
  read -r seconds kb < <(tail -1 "$work/time.txt")
  printf '| %s | %s | %s | %s |\n' "$label" "$count" "$seconds" "$((kb / 1024))"
}

largest=${counts[-1]}
faces=$work/faces-$largest
if [ ! -f "$faces/list_attr_celeba.csv" ]; then
  echo "generating $largest toy faces at ${size}px in $faces (not timed)" >&2
  $LL toy-faces "$faces" --count "$largest" --size "$size" --seed 0 > /dev/null
fi
if [ ! -f "$work/models/scale/model.safetensors" ]; then
  echo "training a toy32 model for 30 steps (not timed: only its cost per image matters here)" >&2
  $LL train --data "$faces/img_align_celeba" --max-steps 30 --out "$work/models/scale" --force > /dev/null 2>&1
fi

ls "$faces/img_align_celeba" | sort > "$work/names.txt"

echo
echo "| command | images | wall s | peak RSS MB |"
echo "|---|---|---|---|"
for n in "${counts[@]}"; do
  sub=$work/subset-$n
  if [ ! -f "$sub/list_attr_celeba.csv" ]; then  # the first n faces, linked, with their labels
    mkdir -p "$sub/img_align_celeba"
    head -n "$n" "$work/names.txt" | while read -r f; do ln -sf "$faces/img_align_celeba/$f" "$sub/img_align_celeba/$f"; done
    head -n $((n + 1)) "$faces/list_attr_celeba.csv" > "$sub/list_attr_celeba.csv"
  fi
  rm -rf "$work/cache" "$work/latents-$n"
  measure "prepare --size $size" "$n" $LL prepare "$sub/img_align_celeba" --size "$size" --quiet
  rm -rf "$work/cache"
  measure "encode (its 32 px cache built first)" "$n" $LL encode --labels "$sub/list_attr_celeba.csv" \
    --model "$work/models/scale" --out "$work/latents-$n" --quiet
  measure "attribute-vectors (latents encoded)" "$n" $LL attribute-vectors --labels "$sub/list_attr_celeba.csv" \
    --model "$work/models/scale" --latents "$work/latents-$n" --out "$work/attributes/scale-$n.safetensors"
done

echo
echo "| interpolate, 3 faces, 64 px frames | frames | wall s | peak RSS MB |"
echo "|---|---|---|---|"
img=$faces/img_align_celeba
a=$(sed -n 1p "$work/names.txt"); b=$(sed -n 2p "$work/names.txt"); c=$(sed -n 3p "$work/names.txt")
for f in "${frames[@]}"; do
  measure "interpolate --frames $f --size 64, .mp4" "$((3 * f))" $LL interpolate "$img/$a" "$img/$b" "$img/$c" \
    --model "$work/models/scale" --frames "$f" --size 64 --out "$work/loop-$f.mp4" --quiet
done
