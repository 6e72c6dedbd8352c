#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the real Fashion-MNIST idx files under
# /usr/share/datasets/fashion-mnist/) where apt and root are available; a no-op elsewhere.
set -u
[ -d /usr/share/datasets/fashion-mnist ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "nas-kd: not root or no apt: put the Fashion-MNIST idx .gz files in ./data/fashion-mnist/ yourself" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
  || echo "nas-kd: could not install dataset-fashion-mnist with apt-get" >&2
