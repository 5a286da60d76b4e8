#!/bin/sh
# Hugin's own lens re-optimisation on the control points of the project beside
# durlach, and our lens fitted on the same points (docs/stitch.md, "Lens model").
# sh docs/bench/hugin_durlach_lens.sh [WORK]   (from the repository root; needs hugin-tools)
set -e
D=$(cd "${TERAPAN_SHARED_DATA:-../shared/data}/panoramas/durlach" && pwd)
W=${1:-/tmp/hugin_durlach_lens}
PY=$(pwd)/.venv/bin/python
mkdir -p "$W"
cd "$W"
# absolute image paths; the project's own optimiser variables dropped
sed -e "s|n\"P|n\"$D/P|" -e '/^v/d' "$D/panorama_hugin_durlach.pto" > stored.pto
q() { "$@" > /dev/null 2>&1; }
# 1. from the project's field of view (the EXIF one): positions, v, b, d, e
q pto_var --opt "y1-24,p,r,v0,b0,d0,e0" -o a.pto stored.pto
q autooptimiser -n -o from_exif.pto a.pto
# 2. from 68.0 degrees and a pinhole: positions from scratch, then v, b, d, e
q pto_var --set "v0=68,b0=0,d0=0,e0=0" --opt "y1-24,p,r" -o b.pto stored.pto
q autooptimiser -p -o b1.pto b.pto
q pto_var --opt "y1-24,p,r" -o b2.pto b1.pto
q autooptimiser -n -o b3.pto b2.pto
q pto_var --opt "y1-24,p,r,v0,b0,d0,e0" -o b4.pto b3.pto
q autooptimiser -n -o from_68.pto b4.pto
cd - > /dev/null
"$PY" -m processing.bench.hugin_cameras --fit "$W/stored.pto" "$W/stored.pto" "$W/from_exif.pto" "$W/from_68.pto"
