#!/usr/bin/env bash
# Build the MicroPython unix port at the pinned commit (firmware/versions.json) four times: plain (as the
# PyPI package the tests run on) and with the terminal's code frozen in (firmware/unix/manifest.py), each
# for this 64-bit host and for 32-bit x86 with single-precision floats, as an ESP32 computes (4-byte
# words and 16-byte GC blocks, small ints of 31 bits, 32-bit floats), so that the heap of each layout can
# be measured on the host and the tests run with the board's arithmetic (docs/heap.md, "By code layout"):
#
#   firmware/unix/build.sh            # -> build/unix/{plain,frozen,plain32,frozen32}/micropython
#   CLOCKTERM_MICROPYTHON=build/unix/frozen32/micropython CLOCKTERM_FROZEN=1 .venv/bin/pytest
#
# Needs `make setup` (the venv), git, make, a C compiler, for the 32-bit builds Debian's
# gcc-i686-linux-gnu, libc6-dev-i386-cross and patchelf (`make frozen-test` installs them as root), and
# the network (GitHub: MicroPython and two of its submodules, mbedtls and micropython-lib, at the commits
# the MicroPython commit pins); `make frozen-test` runs it, `make test` does not. MICROPYTHON_GIT,
# MBEDTLS_GIT, MPLIB_GIT may name other clones (a local mirror). BTREE and FFI are left out: the PyPI
# build has neither.
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
cross=i686-linux-gnu-
if ! command -v ${cross}gcc >/dev/null || ! command -v patchelf >/dev/null; then
  echo "the 32-bit builds need ${cross}gcc and patchelf (Debian: gcc-i686-linux-gnu libc6-dev-i386-cross" \
       "patchelf; 'make frozen-test' as root installs them)" >&2
  exit 1
fi
# The frozen modules compiled again every time: the port's build reuses a .mpy whose source is not newer,
# which across checkouts (or a source whose time went back) would freeze other code than the id says
rm -rf "$src/ports/unix/build-frozen/frozen_mpy" "$src/ports/unix/build-frozen32/frozen_mpy"
for v in plain frozen plain32 frozen32; do
  args=("${opts[@]}")
  case $v in frozen*) args+=(FROZEN_MANIFEST="$repo/firmware/unix/manifest.py") ;; esac
  # 32-bit: i686, and the ESP32 port's float (MICROPY_FLOAT_IMPL_FLOAT; its ints are MPZ, as here)
  case $v in *32) args+=(CROSS_COMPILE=$cross CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT) ;; esac
  make -s -C "$src/ports/unix" -j"$(nproc)" BUILD=build-$v "${args[@]}"
  mkdir -p "$out/$v"
  cp "$src/ports/unix/build-$v/micropython" "$out/$v/micropython"
  case $v in  # the cross toolchain's loader and C library, where Debian puts them
    *32) patchelf --set-interpreter /usr/${cross%-}/lib/ld-linux.so.2 --set-rpath /usr/${cross%-}/lib \
                  "$out/$v/micropython" ;;
  esac
done
for v in plain plain32; do
  "$out/$v/micropython" -c "import sys; print('$v:', sys.implementation, 'maxsize', sys.maxsize)"
done
for v in frozen frozen32; do
  "$out/$v/micropython" -c "import clockterm.app, clockterm.code_id; print('$v:', clockterm.app.__file__, 'code', clockterm.code_id.ID)"
done
