# Freeze manifest of the unix port with the terminal's code frozen in (firmware/unix/build.sh): the unix
# port's own modules first, as in the plain build, then lib/ and its id as firmware/manifest.py freezes
# them into an ESP32 image. Relative paths are relative to this file.
include("$(PORT_DIR)/variants/standard/manifest.py")
package("clockterm", base_path="../../lib")
module("clockterm/code_id.py", base_path="../../build/firmware/code")
