# The virtual board's start, run by the unix port at every reset: what MicroPython's ESP32 firmware does.
#
# The board's filesystem (LittleFS on the vfs partition, formatted when blank) is mounted at /, the ROMFS
# partition at /rom when it
# holds an image (as a firmware built with ROMFS does: /rom and /rom/lib appended to sys.path), vfs.rom_ioctl
# is provided for `mpremote romfs`, then boot.py runs and, unless the reset came from the raw REPL, main.py.
# The interpreter then gives its REPL (-i). Environment: VBOARD_FLASH, VBOARD_HW, VBOARD_DEVICE (this
# folder), VBOARD_MODE ("raw": boot.py only), VBOARD_RESET (machine.reset_cause()), VBOARD_LINK (the
# relay's two pipes: see _run).
import os
import sys

sys.path.insert(0, os.getenv("VBOARD_DEVICE"))
import esp32  # noqa: E402
import machine  # noqa: E402
import network  # noqa: E402, F401
import vfs  # noqa: E402

sys.path.pop(0)
_ROMFS_MAGIC = b"\xd2\xcd\x31"


def _link():
    # The relay's pipes (file descriptors "tell,answer"), opened now: the filesystem mounted at / hides
    # the host's /dev later. None when run without the relay.
    fds = os.getenv("VBOARD_LINK")
    if not fds:
        return None
    tell, answer = fds.split(",")
    return open("/dev/fd/" + tell, "wb"), open("/dev/fd/" + answer, "rb")


_LINK = _link()
if _LINK:
    machine.link = _LINK[0]  # the watchdog's words to the relay


class _Vfs:
    """The vfs module with rom_ioctl, as a firmware built with ROMFS has it."""

    def __init__(self, real, romfs):
        for name in ("mount", "umount", "VfsPosix", "VfsRom", "VfsLfs2", "VfsFat"):
            if hasattr(real, name):
                setattr(self, name, getattr(real, name))
        self._romfs = romfs

    def rom_ioctl(self, op, *args):
        if op == 1:  # number of ROMFS segments
            return 1 if self._romfs else 0
        if op == 2 and self._romfs and args and args[0] == 0:  # the segment: the partition object
            return self._romfs
        return -22  # EINVAL


def _mount_romfs(part):
    # The firmware maps the partition into memory; here it is read into the heap (the virtual board's
    # heap is sized for that: see vboard.py).
    if part is None:
        return False
    buf = bytearray(part.size)
    part.readblocks(0, buf)
    if buf[:3] != _ROMFS_MAGIC:
        return False
    try:
        vfs.mount(vfs.VfsRom(buf), "/rom")
    except OSError as e:
        print("vboard: ROMFS not mounted:", e)
        return False
    return True


def _mount_fs(part):
    # As the firmware's _boot.py: mount LittleFS at /, or format a blank partition first.
    vfs.umount("/")
    try:
        vfs.mount(vfs.VfsLfs2(part), "/")
    except OSError:
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(part)
        vfs.mount(vfs.VfsLfs2(part), "/")
    os.chdir("/")


def _program(name):
    if _LINK:
        _LINK[0].write(b"P")  # from here the relay turns a Ctrl-C into SIGINT: KeyboardInterrupt
    try:
        with open(name) as f:
            code = compile(f.read(), name, "exec")
        exec(code, {"__name__": "__main__"})
    except SystemExit as e:
        if e.value in (machine.RESET_EXIT, machine.RESET_EXIT + 1):
            raise
    except Exception as e:
        sys.print_exception(e)


def _run(name):
    # boot.py or main.py, as the firmware runs them: a Ctrl-C raises KeyboardInterrupt in it, and only then.
    # The relay turns a Ctrl-C into SIGINT (one at most) from our "P" until it answers our "I", so the
    # KeyboardInterrupt may come at any jump of this code until the answer is read: all of it is inside
    # the try, each step done once. (Outside, a KeyboardInterrupt would end this script, and a SIGINT the
    # interpreter: at its REPL the unix port leaves SIGINT to the default action.)
    try:
        os.stat(name)
    except OSError:
        return
    step = 0
    while True:
        try:
            if step == 0:
                step = 1
                _program(name)
            if not _LINK:
                return
            if step == 1:
                _LINK[0].write(b"I")  # ended: the relay answers, then sends Ctrl-C to the REPL as a byte
                step = 2
            if step == 2:
                _LINK[1].read(1)  # (interrupted by the relay's SIGINT: read again)
                step = 3
            if step == 3:  # a jump: the SIGINT sent before the answer raises here at the latest
                return
        except KeyboardInterrupt:
            pass


def _start():
    romfs = esp32.Partition.find(esp32.TYPE_DATA, label="romfs")
    romfs = romfs[0] if romfs else None
    _mount_fs(esp32.Partition.find(esp32.TYPE_DATA, label="vfs")[0])
    # As the ESP32 port orders it: mp_init mounts a ROMFS image and appends /rom and /rom/lib (extmod/vfs.c),
    # then main.c appends /lib; so code in the romfs partition comes before code in /lib
    sys.path[:] = ["", ".frozen"]
    if _mount_romfs(romfs):
        sys.path.extend(("/rom", "/rom/lib"))
    sys.path.append("/lib")
    sys.modules["vfs"] = _Vfs(vfs, romfs)
    _run("boot.py")
    if os.getenv("VBOARD_MODE") != "raw":
        _run("main.py")


_start()
