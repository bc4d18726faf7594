"""A real IMAP and POP3 server for tests: Dovecot (Debian's dovecot-imapd and dovecot-pop3d), run
in the foreground from a configuration of its own in a temporary folder, on free ports, over
TLS with a certificate made here, serving one user's Maildir. `DOVECOT` is None where Dovecot
is not installed; the tests that need it skip then."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.smtp_sink import free_port

DOVECOT = shutil.which("dovecot") or next(
    (path for path in ("/usr/sbin/dovecot",) if os.access(path, os.X_OK)), None
)
USER, PASSWORD = "paperboy", "bounce-mailbox-password-0123"
START_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class MailServer:
    imaps_port: int
    pop3s_port: int
    ca_file: Path  # the server's self-signed certificate: the CA to trust
    maildir: Path  # the user's Maildir, where a mail server would deliver

    def url(self, scheme: str, password: str = PASSWORD) -> str:
        port = self.imaps_port if scheme == "imaps" else self.pop3s_port
        folder = "/INBOX" if scheme == "imaps" else ""
        return f"{scheme}://{USER}:{password}@127.0.0.1:{port}{folder}"


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot stopped: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen within {START_SECONDS} s")


@contextmanager
def dovecot() -> Iterator[MailServer]:
    """Dovecot serving one user, in a folder of its own (short enough for its sockets' names,
    and open to the unprivileged users Dovecot's processes run as), removed afterwards."""
    assert DOVECOT is not None
    folder = Path(tempfile.mkdtemp(prefix="paperboy-dovecot-"))
    folder.chmod(0o755)
    cert, key = _certificate(folder)
    home = folder / "home"
    maildir = home / "Maildir"
    for part in ("new", "cur", "tmp"):
        (maildir / part).mkdir(parents=True, exist_ok=True)
    (folder / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    if os.geteuid() == 0:
        # Dovecot never serves mail as root: the mailbox belongs to an unprivileged user.
        owner = pwd.getpwnam("nobody")
        for path in (home, *home.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        users = "default_login_user = dovenull\ndefault_internal_user = dovecot\n"
    else:
        owner = pwd.getpwuid(os.getuid())
        users = f"default_login_user = {owner.pw_name}\ndefault_internal_user = {owner.pw_name}\n"
    imaps_port, pop3s_port = free_port(), free_port()
    log = folder / "dovecot.log"
    (folder / "dovecot.conf").write_text(
        f"""
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {log}
protocols = imap pop3
listen = 127.0.0.1
{users}
first_valid_uid = 1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {folder}/users
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={home}
}}
mail_location = maildir:{maildir}
pop3_uidl_format = %08Xv%08Xu
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    ssl = yes
  }}
}}
"""
    )
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(folder / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(imaps_port, process, log)
        _wait_for(pop3s_port, process, log)
        yield MailServer(imaps_port, pop3s_port, cert, maildir)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def deliver(server: MailServer, *messages: bytes) -> None:
    """Drop messages into the user's Maildir as a delivery agent would (tmp, then new)."""
    owner = os.stat(server.maildir)
    for number, message in enumerate(messages):
        name = f"{time.time_ns()}.P{os.getpid()}Q{number}.paperboy-test"
        temporary = server.maildir / "tmp" / name
        temporary.write_bytes(message)
        os.chown(temporary, owner.st_uid, owner.st_gid)
        os.replace(temporary, server.maildir / "new" / name)
