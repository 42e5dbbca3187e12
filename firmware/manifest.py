# Freeze manifest for a custom ESP32 image with the terminal built in (frozen bytecode costs no
# heap at import). Build with: make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this file>
# The stock images in versions.json run the same code from /lib/*.mpy instead.
include("$(PORT_DIR)/boards/manifest.py")
package("clockterm", base_path="$(MPY_DIR)/../clockterm-firmware/lib")
# microdot is pinned on the host (requirements-host.txt); point this at its installed package.
package("microdot", base_path="$(MPY_DIR)/../clockterm-firmware/build/third_party")
