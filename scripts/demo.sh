#!/usr/bin/env bash
# The whole latentlab chain, from nothing: data -> train -> attribute vectors -> edits -> interpolation.
#   scripts/demo.sh toy      the embedded toy faces (generated here, no download)
#   scripts/demo.sh celeba   ../shared/celeba-sample (real CelebA faces with their official labels)
set -euo pipefail
cd "$(dirname "$0")/.."
LL=${LATENTLAB:-.venv/bin/latentlab}
kind=${1:-toy}
case "$kind" in
  toy)
    run=models/demo
    labels=data/toy-faces-n5000-s0/list_attr_celeba.csv
    # faces without the attributes swept (the edits add them), whose slerp paths decode cleanly with the
    # short demo model (about one pair in five shows a saturated patch midway; see README)
    faces=(data/toy-faces-n5000-s0/img_align_celeba/004993.png data/toy-faces-n5000-s0/img_align_celeba/004972.png
           data/toy-faces-n5000-s0/img_align_celeba/004999.png)
    attrs=(--attr Smiling --attr Blond_Hair --attr Eyeglasses --attr Wearing_Hat)
    sweep=-1.5,1.5,7
    $LL train --out "$run" --force --max-steps "${DEMO_STEPS:-900}"
    ;;
  celeba)
    sample=../shared/celeba-sample
    if [ ! -f "$sample/list_attr_celeba.csv" ]; then
      echo "demo-celeba needs ../shared/celeba-sample (CelebA images + list_attr_celeba.csv); it is not there." >&2
      exit 1
    fi
    run=models/demo-celeba
    labels=$sample/list_attr_celeba.csv
    faces=("$sample/images/000062.jpg" "$sample/images/000099.jpg" "$sample/images/000130.jpg")
    attrs=(--attr Smiling --attr Blond_Hair --attr Male --attr Eyeglasses)
    sweep=-2,2,9  # at 32 px, after 8 minutes, alpha 1 is subtle: the sweep goes to 2
    $LL train --data "$sample/images" --preset celeba32 --out "$run" --force --time-limit "${DEMO_MINUTES:-8}"
    ;;
  *) echo "usage: scripts/demo.sh toy|celeba" >&2; exit 2 ;;
esac
out=outputs/$(basename "$run")
mkdir -p "$out"
$LL sample --model "$run" --n 36 --temperature 0.7 --out "$out/samples.png"
$LL sample --model "$run" --n 8 --temperature 0,0.5,0.7,1 --out "$out/temperatures.png"
$LL attribute-vectors --labels "$labels" --model "$run" --out "attributes/$(basename "$run").safetensors"
$LL manipulate "${faces[0]}" "${attrs[@]}" --sweep "$sweep" --model "$run" --out "$out/sweep.png"
$LL manipulate "${faces[0]}" --attr Smiling --sweep "$sweep" --model "$run" --out "$out/smile.gif"
$LL interpolate "${faces[@]}" --model "$run" --frames 24 --out "$out/loop.mp4"
$LL interpolate "${faces[@]}" --model "$run" --frames 16 --out "$out/loop.gif"
echo
echo "demo outputs:"
echo "  model:              $run/  (samples during training in $run/samples/)"
echo "  attribute vectors:  attributes/$(basename "$run").safetensors (+ -report.json/.csv/-cosine.png)"
echo "  samples:            $out/samples.png, $out/temperatures.png"
echo "  edits:              $out/sweep.png, $out/smile.gif"
echo "  interpolation:      $out/loop.mp4, $out/loop.gif"
