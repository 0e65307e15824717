#!/usr/bin/env bash
# Installs the Debian packages shmbus needs, only those missing.
#   scripts/deps.sh test    build + test toolchain (the README's test command)
#   scripts/deps.sh bench   that plus the peers and plotting of the report
# Idempotent; uses sudo when not root; prints what it does.
set -euo pipefail
what=${1:-test}

pkgs=(build-essential cmake ninja-build pkg-config git
      libboost-dev libhwloc-dev hwloc googletest libgtest-dev libgmock-dev libbenchmark-dev
      libcli11-dev nlohmann-json3-dev libmsgpack-cxx-dev python3-msgpack liblmdb-dev
      clang libclang-rt-14-dev python3
      libzmq3-dev)  # shmbus::bridge and bus-bridge (ZeroMQ + CURVE); also a bench peer
if [[ $what == bench ]]; then
  pkgs+=(python3-matplotlib)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi
sudo=""
if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
