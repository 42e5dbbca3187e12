"""A real slapd (Debian's OpenLDAP) for the directory sync tests: started by the test from a temp config
folder on loopback, LDAPS and StartTLS with certificates from trustme, paged results limited like Active
Directory's (a plain search stops at the page limit), an AD-like schema (employeeID, userAccountControl)
and a multi-valued badge attribute."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import trustme

BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
READER = f"cn=reader,{BASE}"
READER_PW = "reader-secret"
ADMIN = f"cn=admin,{BASE}"
ADMIN_PW = "admin-secret"
PAGE_LIMIT = 100  # entries a search answers without paging, and per page (AD: 1,000)

# AD's OIDs for its two attributes; badgeId (multi-valued: a card and a key fob) in a private arc.
SCHEMA = """
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.35 NAME 'employeeID'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'badgeId'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'adUser' SUP top AUXILIARY
  MAY ( userAccountControl $ employeeID $ badgeId ) )
"""

CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {d}/ad.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
database mdb
suffix "{base}"
rootdn "{admin}"
rootpw {admin_pw}
directory {d}/db
maxsize 104857600
limits users size.soft={limit} size.hard={limit} size.pr={limit} size.prtotal=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ldif(people: list[dict[str, object]]) -> str:
    """The directory: base, OU, the reader account and people ({uid, attrs...}: lists for multi-values)."""
    out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
           f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: {READER}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\nsn: reader\n"
           f"userPassword: {READER_PW}\n"]
    for p in people:
        lines = [f"dn: uid={p['uid']},{PEOPLE}", "objectClass: inetOrgPerson", "objectClass: adUser",
                 f"uid: {p['uid']}", f"cn: {p['uid']}", "sn: person"]
        for k, v in p.items():
            if k != "uid":
                for x in (v if isinstance(v, list) else [v]):
                    lines.append(f"{k}:: {_b64(str(x))}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


class Slapd:
    """slapd on 127.0.0.1 (ldaps_url, ldap_url; ca_path verifies it) with the given people."""

    def __init__(self, folder: Path, people: list[dict[str, object]], host_names: tuple[str, ...] = ("localhost",)):
        if not shutil.which("slapd") and not Path("/usr/sbin/slapd").exists():
            raise RuntimeError("slapd is missing: run 'make setup' (Debian packages slapd, ldap-utils)")
        self.d = Path(folder)
        (self.d / "db").mkdir(parents=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(*host_names)
        self.ca_path = self.d / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        cert.private_key_pem.write_to_path(str(self.d / "server.key"))
        (self.d / "server.pem").write_bytes(b"".join(c.bytes() for c in cert.cert_chain_pems))
        (self.d / "ad.schema").write_text(SCHEMA)
        (self.d / "slapd.conf").write_text(CONF.format(d=self.d, base=BASE, admin=ADMIN, admin_pw=ADMIN_PW,
                                                       limit=PAGE_LIMIT))
        (self.d / "data.ldif").write_text(ldif(people))
        r = subprocess.run(["/usr/sbin/slapadd", "-q", "-f", str(self.d / "slapd.conf"), "-l",
                            str(self.d / "data.ldif")], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"slapadd failed:\n{r.stdout}{r.stderr}")
        self.ldaps_port, self.ldap_port = _free_port(), _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://localhost:{self.ldap_port}"

    def start(self) -> Slapd:
        urls = f"ldaps://127.0.0.1:{self.ldaps_port}/ ldap://127.0.0.1:{self.ldap_port}/"
        self.log = open(self.d / "slapd.log", "wb")  # noqa: SIM115 - closed in stop()
        # -d 0: stay in the foreground (this test's own process), no debug output.
        self.proc = subprocess.Popen(["/usr/sbin/slapd", "-d", "0", "-f", str(self.d / "slapd.conf"), "-h", urls],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}:\n{(self.d / 'slapd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.ldap_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("slapd did not open its port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
