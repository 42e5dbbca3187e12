# A stand-in for the ESP32's network module (Wi-Fi/Ethernet), for board-layer tests on the unix port.
STA_IF = 0
PHY_LAN8720 = 1
PHY_IP101 = 2
plan = []  # for each connect(): True (connects) or False (never connects)
log = []


class _NIC:
    def __init__(self):
        self._active = False
        self._up = False
        self._cfg = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def active(self, v=None):
        if v is not None:
            self._active = v
        return self._active

    def isconnected(self):
        return self._up

    def ifconfig(self, cfg=None):
        if cfg is not None:
            self._cfg = cfg
            log.append(("ifconfig", cfg))
        return self._cfg if self._up else ("0.0.0.0",) * 4

    def drop(self):
        self._up = False


class WLAN(_NIC):
    def __init__(self, iface):
        super().__init__()
        log.append(("WLAN", iface))

    def connect(self, ssid, password):
        log.append(("connect", ssid))
        self._up = plan.pop(0) if plan else True
        if self._up and self._cfg[0] == "0.0.0.0":
            self._cfg = ("192.0.2.10", "255.255.255.0", "192.0.2.1", "192.0.2.1")


class LAN(_NIC):
    def __init__(self, **kw):
        super().__init__()
        log.append(("LAN", sorted(kw)))

    def active(self, v=None):
        if v:
            self._up = plan.pop(0) if plan else True
            if self._up and self._cfg[0] == "0.0.0.0":
                self._cfg = ("192.0.2.20", "255.255.255.0", "192.0.2.1", "192.0.2.1")
        return super().active(v)
