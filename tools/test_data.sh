#!/usr/bin/env bash
# Finds, or provisions, the Fashion-MNIST .gz files the tests read and prints their folder.
# In order: Debian's copy; installing it with apt-get (as root); `tb datasets fetch` over the
# network into .data/ (re-gzipped into the flat layout Debian uses). Else one line says how.
set -euo pipefail
system_dir="${TB_SYSTEM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
local_dir="${TB_LOCAL_FASHION_MNIST:-.data/fashion-mnist}"
tb="${TB:-.venv/bin/tb}"
stems="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

complete() {
  for stem in $stems; do [ -s "$1/$stem.gz" ] || return 1; done
}

if complete "$system_dir"; then echo "$system_dir"; exit 0; fi
if complete "$local_dir"; then echo "$local_dir"; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && [ "$system_dir" = /usr/share/datasets/fashion-mnist ]; then
  echo "installing Debian's dataset-fashion-mnist for the tests" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq dataset-fashion-mnist; } >&2 || true
  if complete "$system_dir"; then echo "$system_dir"; exit 0; fi
fi
fetched="$local_dir.fetch"
echo "fetching Fashion-MNIST for the tests with tb datasets fetch (30 MB)" >&2
if "$tb" datasets fetch fashion-mnist --root "$fetched" >&2; then
  mkdir -p "$local_dir"
  for stem in $stems; do
    gzip -nc "$fetched/FashionMNIST/raw/$stem" > "$local_dir/$stem.gz.part"
    mv "$local_dir/$stem.gz.part" "$local_dir/$stem.gz"
  done
  rm -rf "$fetched"
  if complete "$local_dir"; then echo "$local_dir"; exit 0; fi
fi
echo "error: the tests need Fashion-MNIST in $system_dir: install it (sudo apt-get install" \
     "dataset-fashion-mnist), or run 'make test' once with network access" >&2
exit 1
