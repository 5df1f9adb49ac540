#!/usr/bin/env bash
# Fetch the public datasets and pretrained files this project uses (needs internet).
#
#   bash download.sh all            # everything that can be fetched automatically
#   bash download.sh phoenix-2014t  # one item: phoenix-2014t | phoenix-2014 | csl-daily | s3d | mbart
#
# What lands where (the paths the configs under experiments/configs expect):
#   data/phoenix-2014t/  Phoenix-2014T release, frames zipped as phoenix-2014t-videos.zip
#   data/phoenix-2014/   Phoenix-2014 release, frames zipped as phoenix-2014-videos.zip
#   data/csl-daily/      CSL-Daily: needs a signed agreement, fetched by hand (see below)
#   pretrained_models/s3ds_actioncls_ckpt/  S3D pretrained on Kinetics-400
#   pretrained_models/mbart-large-cc25/     full mBART-cc25 (Hugging Face)
#   pretrained_models/mBart_de, mBart_zh/   pruned mBART made by preprocess/prune_mbart.py
#
# The annotation files (gloss/text, gzip pickles) of the original release and the HRNet
# keypoints are hosted on OneDrive links that cannot be scripted; this script prints where
# to get them and where to put them. Each step is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")"

PHOENIX_URL=https://www-i6.informatik.rwth-aachen.de/ftp/pub/rwth-phoenix/2016
S3D_URL=https://download.pytorch.org/models/s3d-d76dad2f.pth
RELEASE_PAGE=https://github.com/FangyunWei/SLRT/tree/main/TwoStreamNetwork

die() { echo "download.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "'$1' is required but not installed"; }

fetch() {  # fetch URL FILE
  [ -s "$2" ] && { echo "have $2"; return; }
  need wget
  mkdir -p "$(dirname "$2")"
  wget -c "$1" -O "$2.part" && mv "$2.part" "$2"
}

zip_frames() {  # zip_frames FRAMES_DIR PREFIX ZIP: members PREFIX/<path under FRAMES_DIR>
  [ -s "$3" ] && { echo "have $3"; return; }
  need zip
  [ -d "$1" ] || die "frames folder $1 not found (did the archive unpack?)"
  local stage; stage=$(mktemp -d)
  ln -s "$(cd "$1" && pwd)" "$stage/$2"  # zip stores the files behind the link under PREFIX/
  (cd "$stage" && zip -q -r -0 "$OLDPWD/$3.part" "$2") && mv "$3.part" "$3"
  rm -rf "$stage"
}

manual_notice() {  # manual_notice DATASET
  cat <<EOF
Also needed for $1, from the original release ($RELEASE_PAGE, README "Data preparation"):
  - the annotation files  $1.{train,dev,test}  and gloss2ids.pkl   -> data/$1/
  - the HRNet keypoints    $1-keypoints.pkl                         -> data/$1/
  (OneDrive links; download them in a browser.)
EOF
}

phoenix_2014t() {
  fetch "$PHOENIX_URL/phoenix-2014-T.v3.tar.gz" data/phoenix-2014t/phoenix-2014-T.v3.tar.gz
  [ -d data/phoenix-2014t/PHOENIX-2014-T-release-v3 ] || tar -xzf data/phoenix-2014t/phoenix-2014-T.v3.tar.gz -C data/phoenix-2014t
  # members images/<split>/<video>/images0001.png; annotation names are "<split>/<video>"
  zip_frames data/phoenix-2014t/PHOENIX-2014-T-release-v3/PHOENIX-2014-T/features/fullFrame-210x260px \
    images data/phoenix-2014t/phoenix-2014t-videos.zip
  manual_notice phoenix-2014t
}

phoenix_2014() {
  fetch "$PHOENIX_URL/phoenix-2014.v3.tar.gz" data/phoenix-2014/phoenix-2014.v3.tar.gz
  [ -d data/phoenix-2014/phoenix2014-release ] || tar -xzf data/phoenix-2014/phoenix-2014.v3.tar.gz -C data/phoenix-2014
  # members fullFrame-210x260px/<split>/<folder>/<video>.avi_pid0_fn000000-0.png
  zip_frames data/phoenix-2014/phoenix2014-release/phoenix-2014-multisigner/features/fullFrame-210x260px \
    fullFrame-210x260px data/phoenix-2014/phoenix-2014-videos.zip
  manual_notice phoenix-2014
}

csl_daily() {
  if [ -s data/csl-daily/csl-daily-videos.zip ]; then echo "have data/csl-daily/csl-daily-videos.zip"; return; fi
  die "CSL-Daily needs a signed agreement: request it at http://home.ustc.edu.cn/~zhouh156/dataset/csl-daily/ ,
then unpack sentence_frames-512x512/ into data/csl-daily/ and run
  (cd data/csl-daily && zip -q -r -0 csl-daily-videos.zip sentence_frames-512x512)
$(manual_notice csl-daily)"
}

s3d() {
  # torchvision's Kinetics-400 S3D weights (ported from the same kylemin/S3D model the
  # original release used); modelling/s3d_stream.py reads this layout as well.
  fetch "$S3D_URL" pretrained_models/s3ds_actioncls_ckpt/s3d_kinetics400.pt
  echo "The K400+WLASL S3D (s3ds_glosscls_ckpt) is only on the original release's OneDrive ($RELEASE_PAGE)."
}

mbart() {
  need python
  if [ ! -s pretrained_models/mbart-large-cc25/config.json ]; then
    python -m pip install -q "huggingface_hub>=0.20"
    python -c "from huggingface_hub import snapshot_download; snapshot_download('facebook/mbart-large-cc25', local_dir='pretrained_models/mbart-large-cc25')"
  fi
  for pair in "de:phoenix-2014t" "zh:csl-daily"; do
    lang=${pair%%:*}; dataset=${pair#*:}
    out=pretrained_models/mBart_$lang
    [ -s "$out/config.json" ] && { echo "have $out"; continue; }
    if [ -s "data/$dataset/$dataset.train" ]; then
      python -m preprocess.prune_mbart --mbart pretrained_models/mbart-large-cc25 \
        --annotations "data/$dataset/$dataset.train" "data/$dataset/$dataset.dev" "data/$dataset/$dataset.test" \
        --out "$out"
      # the published mBart_zh folder names its id map old2new_vocab.pkl (the configs use it)
      [ "$lang" = zh ] && ln -sf map_ids.pkl "$out/old2new_vocab.pkl"
    else
      echo "skip $out: data/$dataset/$dataset.train is missing (needed to prune the vocabulary)"
    fi
  done
}

case "${1:-all}" in
  phoenix-2014t) phoenix_2014t ;;
  phoenix-2014) phoenix_2014 ;;
  csl-daily) csl_daily ;;
  s3d) s3d ;;
  mbart) mbart ;;
  all) phoenix_2014t; phoenix_2014; s3d; mbart; csl_daily ;;
  *) die "unknown item '$1'; choose one of: all phoenix-2014t phoenix-2014 csl-daily s3d mbart" ;;
esac
