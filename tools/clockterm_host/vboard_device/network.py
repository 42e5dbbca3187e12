# The virtual board's network module: a link that is up at once, its sockets the host's loopback.
STA_IF = 0
AP_IF = 1
PHY_LAN8720 = 1
PHY_IP101 = 2
PHY_RTL8201 = 3
PHY_DP83848 = 4
PHY_KSZ8041 = 5
PHY_KSZ8081 = 6
_hostname = "clockterm"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class _NIC:
    def __init__(self):
        self._active = False
        self._up = False
        self._cfg = ("0.0.0.0",) * 4

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = v

    def isconnected(self):
        return self._up

    def ifconfig(self, cfg=None):
        if cfg is not None:
            self._cfg = cfg
            return None
        return self._cfg if self._up else ("0.0.0.0",) * 4

    def config(self, *a, **kw):
        if a and a[0] == "mac":
            return b"\x02vbrd\x01"
        return None

    def _connect(self):
        self._up = True
        if self._cfg[0] == "0.0.0.0":
            self._cfg = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def status(self, *a):
        return 1010 if self._up else 1000


class WLAN(_NIC):
    def __init__(self, iface=STA_IF):
        super().__init__()

    def connect(self, ssid=None, key=None, **kw):
        self._connect()

    def disconnect(self):
        self._up = False


class LAN(_NIC):
    def __init__(self, *a, **kw):
        super().__init__()

    def active(self, v=None):
        if v:
            self._connect()
        return super().active(v)
