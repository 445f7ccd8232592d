#!/usr/bin/env bash
# Download the NVlabs utilities and the StyleGAN pickles the FedKTL paper used into stylegan/.
# Needs internet access, git and curl. The library never runs this: runs and tests read local files.
#
#   bash stylegan/download_weights.sh [--afhqv2]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

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
if [[ "${1:-}" == "--afhqv2" ]]; then
  fetch https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-t-afhqv2-512x512.pkl \
        "$here/stylegan-3-models/stylegan3-t-afhqv2-512x512.pkl"
fi
echo "done: see stylegan/README.md for the run commands"
