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
        self.conf_text = (
            f"user {getpass.getuser()}\n"                 # else root drops to 'mosquitto', which cannot write here
            "listener {port} 127.0.0.1\n" + tls_lines
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
        self.tls = tls
        self.proc = None
        self._use_port(self.port)
        self.started_once = False

    def _use_port(self, port: int) -> None:
        self.port = port
        self.conf.write_text(self.conf_text.replace("{port}", str(port)))
        self.url = f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{port}"

    def start(self, timeout: float = 10.0) -> "Broker":
        """Start (or restart, on the same port) and wait until it accepts connections. A first
        start whose port was taken meanwhile (free_port cannot reserve it) moves to a new one."""
        for _ in range(5):
            if self._launch(timeout):
                self.started_once = True
                return self
            if self.started_once:            # a restart must keep its port: clients reconnect to it
                break
            self._use_port(free_port())
        raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.dir / 'mosquitto.log'}")

    def _launch(self, timeout: float) -> bool:
        """True once this broker runs and listens ("... running" in its log after this launch);
        a TCP connect alone could reach another process listening on the same port."""
        log = self.dir / "mosquitto.log"
        seen = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:         # it exited: the port was taken (or a bad config)
                return False
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(seen)
                    if b" running" in fh.read():
                        return True
            time.sleep(0.02)
        self.kill()
        return False

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
