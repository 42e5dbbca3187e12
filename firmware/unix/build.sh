#!/usr/bin/env bash
# Build the MicroPython unix port at the pinned commit (firmware/versions.json) twice: plain (as the PyPI
# package the tests run on) and with the terminal's code frozen in (firmware/unix/manifest.py), so that
# the heap of the frozen layout can be measured on the host (docs/heap.md, "By code layout"):
#
#   firmware/unix/build.sh            # -> build/unix/plain/micropython, build/unix/frozen/micropython
#   CLOCKTERM_MICROPYTHON=build/unix/frozen/micropython CLOCKTERM_FROZEN=1 .venv/bin/python -m bench heap
#
# Needs `make setup` (the venv), git, make, a C compiler and the network (GitHub: MicroPython and two
# of its submodules, mbedtls and micropython-lib, at the commits the MicroPython commit pins); `make
# frozen-test` runs it, `make test` does not. MICROPYTHON_GIT, MBEDTLS_GIT, MPLIB_GIT may name other
# clones (a local mirror). BTREE and FFI are left out: the PyPI build has neither.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/build/unix"
src="$out/micropython"
commit=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['micropython']['commit'])" \
         "$repo/firmware/versions.json")
mkdir -p "$out"
# the id of lib/ frozen with it (clockterm.code_id.ID), as `make firmware-inputs` writes it for an image
"$repo/.venv/bin/python" -c "import sys; from pathlib import Path; from clockterm_host import bundle
bundle.write_code_module(Path(sys.argv[1]))" "$repo/build/firmware/code"
if [ ! -d "$src/.git" ]; then
  git clone -q "${MICROPYTHON_GIT:-https://github.com/micropython/micropython.git}" "$src"
fi
git -C "$src" checkout -q "$commit"
sub() {  # sub PATH URL: the submodule at PATH, at the commit the superproject pins
  local pin
  pin=$(git -C "$src" ls-tree HEAD "$1" | awk '{print $3}')
  if [ ! -d "$src/$1/.git" ] && [ ! -f "$src/$1/.git" ]; then
    rm -rf "${src:?}/$1"
    git clone -q "$2" "$src/$1"
  fi
  git -C "$src/$1" checkout -q "$pin"
}
sub lib/mbedtls "${MBEDTLS_GIT:-https://github.com/Mbed-TLS/mbedtls.git}"
sub lib/micropython-lib "${MPLIB_GIT:-https://github.com/micropython/micropython-lib.git}"
make -s -C "$src/mpy-cross" -j"$(nproc)"
opts=(MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0)
make -s -C "$src/ports/unix" -j"$(nproc)" BUILD=build-plain "${opts[@]}"
# The frozen modules compiled again every time: the port's build reuses a .mpy whose source is not newer,
# which across checkouts (or a source whose time went back) would freeze other code than the id says
rm -rf "$src/ports/unix/build-frozen/frozen_mpy"
make -s -C "$src/ports/unix" -j"$(nproc)" BUILD=build-frozen "${opts[@]}" \
     FROZEN_MANIFEST="$repo/firmware/unix/manifest.py"
for v in plain frozen; do
  mkdir -p "$out/$v"
  cp "$src/ports/unix/build-$v/micropython" "$out/$v/micropython"
done
"$out/plain/micropython" -c "import sys; print('plain:', sys.implementation)"
"$out/frozen/micropython" -c "import clockterm.app, clockterm.code_id; print('frozen:', clockterm.app.__file__, 'code', clockterm.code_id.ID)"
