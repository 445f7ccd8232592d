#!/usr/bin/env bash
# Download the NVlabs utilities and the StyleGAN pickles the FedKTL paper used into stylegan/.
# Needs internet access, git and curl. The library never runs this: runs and tests read local files.
#
#   bash stylegan/download_weights.sh [--afhqv2] [--ffhqu] [--wikiart] [--all]
#
# File names and URLs are those of the FedKTL authors' README, which match StyleGAN-XL's and
# NVIDIA's StyleGAN3 model zoos (see stylegan/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ngc=https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files

afhqv2=0 ffhqu=0 wikiart=0
for flag in "$@"; do
  case "$flag" in
    --afhqv2) afhqv2=1 ;;
    --ffhqu) ffhqu=1 ;;
    --wikiart) wikiart=1 ;;
    --all) afhqv2=1 ffhqu=1 wikiart=1 ;;
    *) echo "error: unknown flag $flag: use --afhqv2, --ffhqu, --wikiart or --all" >&2; exit 2 ;;
  esac
done

fetch() {  # fetch URL TARGET: skip files already present, download to a temporary name first
  local url="$1" target="$2"
  if [[ -s "$target" ]]; then echo "have $target"; return; fi
  mkdir -p "$(dirname "$target")"
  echo "downloading $url"
  curl -fL --retry 3 -o "$target.part" "$url"
  mv "$target.part" "$target"
  echo "  $(du -h "$target" | cut -f1)  $target"
}

if [[ ! -d "$here/stylegan-utils/torch_utils" ]]; then
  git clone --depth 1 https://github.com/autonomousvision/stylegan-xl "$here/stylegan-utils"
fi
fetch https://s3.eu-central-1.amazonaws.com/avg-projects/stylegan_xl/models/imagenet64.pkl \
      "$here/stylegan-xl-models/imagenet64.pkl"
fetch https://g-75671f.f5dc97.75bc.dn.glob.us/benches/network-snapshot-011000.pkl \
      "$here/stylegan-3-models/Benches-512.pkl"
if (( afhqv2 )); then
  fetch "$ngc/stylegan3-t-afhqv2-512x512.pkl" "$here/stylegan-3-models/stylegan3-t-afhqv2-512x512.pkl"
fi
if (( ffhqu )); then  # the paper's FFHQ-U generator: config R at 256x256, as the FedKTL README links it
  fetch "$ngc/stylegan3-r-ffhqu-256x256.pkl" "$here/stylegan-3-models/stylegan3-r-ffhqu-256x256.pkl"
fi
if (( wikiart )); then
  # Lambda Labs publish their WikiArt StyleGAN3 only through a blog post, with no stable file
  # URL to check here; unofficial mirrors are not fetched, since a pickle runs code when loaded.
  target="$here/stylegan-3-models/wikiart-1024-stylegan3-t-17.2Mimg.pkl"
  if [[ -s "$target" ]]; then echo "have $target"
  else echo "WikiArt: download wikiart-1024-stylegan3-t-17.2Mimg.pkl from https://lambdalabs.com/blog/stylegan-3 to $target"
  fi
fi
echo "done: see stylegan/README.md for the run commands"
