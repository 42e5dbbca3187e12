# Freeze manifest of the terminal's image: the port's own modules, then the terminal's code and the id of
# that code (clockterm.code_id.ID: deploy and check compare it with the repository's). Frozen, the bytecode,
# its constants and its names stay in flash: the least heap of all layouts (docs/heap.md, "By code
# layout"), and one file per release. The board folders of `make firmware-inputs` name this manifest
# (mpconfigboard.cmake), which also writes build/firmware/code/clockterm/code_id.py. Relative paths are
# relative to this file.
include("$(PORT_DIR)/boards/manifest.py")
package("clockterm", base_path="../lib")
module("clockterm/code_id.py", base_path="../build/firmware/code")
