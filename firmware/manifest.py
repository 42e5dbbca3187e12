# Freeze manifest: a custom image with the terminal's code frozen in (bytecode and names in flash: the
# least heap of all layouts, and no ROMFS partition needed; every code change is then a new image).
# Inputs: `make firmware-inputs` (the board folders into build/firmware/boards). Build, from the
# MicroPython checkout at the commit of firmware/versions.json (firmware/README.md, "Frozen"):
#   make -C ports/esp32 BOARD_DIR=<repo>/build/firmware/boards/CLOCKTERM_ESP32 FROZEN_MANIFEST=<repo>/firmware/manifest.py
# Relative paths are relative to this file.
include("$(PORT_DIR)/boards/manifest.py")
package("clockterm", base_path="../lib")
