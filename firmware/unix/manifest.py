# Freeze manifest of the unix port with the terminal's code frozen in (firmware/unix/build.sh): the unix
# port's own modules first, as in the plain build, then lib/ as firmware/manifest.py freezes it into an
# ESP32 image. Relative paths are relative to this file.
include("$(PORT_DIR)/variants/standard/manifest.py")
package("clockterm", base_path="../../lib")
