"""A private Mosquitto for tests: free loopback port, persistence in a temp dir, and
kill/restart on demand."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path, user: tuple[str, str] | None = None,
                 tls: bool = False):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed: run ./dev.sh test (it installs it), "
                               "or apt-get install mosquitto")
        self.exe, self.dir, self.port = exe, workdir, free_port()
        self.conf = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)
        if user:
            subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c",
                            str(workdir / "passwd"), *user], check=True, capture_output=True)
        tls_lines = ""
        if tls:
            self.ca = make_certificates(workdir)
            tls_lines = (f"cafile {self.ca}\ncertfile {workdir / 'server.crt'}\nkeyfile {workdir / 'server.key'}\n"
                         "tls_version tlsv1.2\n")
        self.conf.write_text(
            f"user {getpass.getuser()}\n"                 # else root drops to 'mosquitto', which cannot write here
            f"listener {self.port} 127.0.0.1\n" + tls_lines
            + (f"allow_anonymous false\npassword_file {workdir / 'passwd'}\n" if user else "allow_anonymous true\n")
            + "set_tcp_nodelay true\n"            # no Nagle delay on small messages (default: off)
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            # Saved once a second. Mosquitto acknowledges a publish before saving it, so a SIGKILL
            # loses up to a second of what it acknowledged, whatever this is (saving on every
            # change only makes each message cost a write of the whole database).
            + "autosave_interval 1\n" +
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"           # readings stay unacked until a checkpoint commits them
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        )
        self.proc = None
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Broker":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.dir / 'mosquitto.log'}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def make_certificates(workdir: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=workdir)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgelstm test CA",
         "-keyout", "ca.key", "-out", "ca.crt")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
         "-out", "server.csr")
    (workdir / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "san.ext", "-out", "server.crt")
    return workdir / "ca.crt"
