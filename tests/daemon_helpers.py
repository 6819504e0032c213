"""Run the daemon as a real subprocess and talk to it as users do: MQTT, ptys, /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from broker import free_port
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import edgelstm
from edgelstm.protocol.payload import encode_binary
from edgelstm.transports.mqtt_link import no_nagle

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "edgelstm" / "data" / "activity.elstm"


def readings(n_streams: int, per_stream: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"s{i:02d}": rng.normal(0, 1, (per_stream, 3)).astype(np.float32) for i in range(n_streams)}


def offline(xs: dict[str, np.ndarray]):
    """Predictions and final state of each stream stepped alone: what the daemon must match."""
    model = edgelstm.load(MODEL)
    ys, states = {}, {}
    for sid, x in xs.items():
        s = model.stream()
        ys[sid] = np.array([s.step(v) for v in x])
        states[sid] = s.get_state().values
    return ys, states


_STARTED: list[subprocess.Popen] = []         # every daemon a test started, for kill_leftovers


def kill_leftovers() -> None:
    """Kill daemons a failed test left running (they would load the machine for later tests)."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _STARTED.clear()


PORT_TRIES = 5


class _MetricsPortTaken(RuntimeError):
    """The daemon exited because its metrics port was taken (the last try's error, when all fail)."""


def _lost_metrics_port(output: str, port: int) -> bool:
    """The daemon's output says that its metrics port was taken: at preflight, or when its server bound it."""
    return (f"metrics port {port} on 127.0.0.1 is in use" in output
            or f"cannot serve metrics on 127.0.0.1:{port} (Address already in use)" in output)


class DaemonProcess:
    def __init__(self, workdir: Path, broker_url: str | None = None, extra: str = "", mqtt_extra: str = "",
                 client_id: str | None = None, args: tuple[str, ...] = ()):
        self.dir = workdir
        self.args = args                        # more `edgelstm run` flags, after -c CONFIG
        self.metrics_port = free_port()
        self.checkpoint = workdir / "state.ckpt"
        self.log = workdir / "daemon.log"
        self.client_id = client_id or f"edgelstm-test-{uuid.uuid4().hex[:8]}"
        mqtt_section = ""
        if broker_url:
            mqtt_section = (f'[mqtt]\nurl = "{broker_url}"\nclient_id = "{self.client_id}"\n'
                            f'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n{mqtt_extra}\n')
        self.config = workdir / "edgelstm.toml"
        self.config.write_text(f'model = "{MODEL}"\ncheckpoint = "{self.checkpoint}"\ncommit_interval_s = 0.1\n'
                               f'metrics_port = {self.metrics_port}\nlog_every_s = 2.0\n{extra}\n{mqtt_section}')
        self.proc = None

    def start(self, wait_connected: bool = True, env_extra: dict | None = None) -> "DaemonProcess":
        """Start the daemon and wait until it serves metrics (and, by default, is subscribed). The
        metrics port was free when chosen, but another process may bind it before the daemon does:
        then the daemon exits saying so, and it is started again on another port."""
        for _ in range(PORT_TRIES - 1):
            try:
                return self._start(wait_connected, env_extra)
            except _MetricsPortTaken:
                self.logfh.close()
                self._use_metrics_port(free_port())
        return self._start(wait_connected, env_extra)

    def _use_metrics_port(self, port: int) -> None:
        text = self.config.read_text()
        self.config.write_text(text.replace(f"metrics_port = {self.metrics_port}\n", f"metrics_port = {port}\n"))
        self.metrics_port = port

    def _start(self, wait_connected: bool, env_extra: dict | None) -> "DaemonProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
        self.logfh = open(self.log, "ab")
        offset = self.logfh.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "edgelstm", "run", "-c", str(self.config), *self.args],
                                     stdout=self.logfh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _STARTED.append(self.proc)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                output = self.log.read_bytes()[offset:].decode(errors="replace")
                error = _MetricsPortTaken if _lost_metrics_port(output, self.metrics_port) else RuntimeError
                raise error(f"daemon exited with {self.proc.returncode}:\n{output[-3000:]}")
            text = self.log.read_text().split("--- start")[-1]
            # Ready once the broker confirmed the subscription: readings published before that
            # (a first connect has no session yet) would never reach the daemon.
            if "metrics at" in text and (not wait_connected or "mqtt: subscribed" in text):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up:\n{self.log.read_text()[-3000:]}")

    def mark(self):
        with open(self.log, "a") as fh:
            fh.write("--- start\n")

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.split("{")[0] == name)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.logfh.close()

    def terminate(self, timeout: float = 5.0) -> int:
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout + 5)
        self.stop_seconds = time.time() - t0
        self.logfh.close()
        return rc


def v5_client(url_port: int, client_id: str, on_message=None, inflight: int = 20, auth=None,
              ca=None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_socket_open = no_nagle
    if auth:
        c.username_pw_set(*auth)
    if ca:
        c.tls_set(ca_certs=str(ca))
    c.reconnect_delay_set(0.1, 0.5)
    c.max_inflight_messages_set(inflight)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    if on_message:
        c.on_message = on_message
    c.connect_async("127.0.0.1", url_port, clean_start=False, properties=props)
    return c


def expected_keys(xs: dict) -> set:
    """Every (stream, seq) the readings `xs` should be answered for."""
    return {(sid, seq) for sid, x in xs.items() for seq in range(len(x))}


def wait_until(condition, timeout: float, lock) -> bool:
    """Poll `condition` (under `lock`) until it holds or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with lock:
            if condition():
                return True
        time.sleep(0.05)
    return False


def stop_client(client) -> None:
    client.disconnect()
    client.loop_stop()


def prediction_y(payload: dict) -> np.ndarray:
    return np.array(payload["y"], np.float32)


class Collector:
    """Subscribes to predictions (persistent session) and records them by (stream, seq): what
    `keep` makes of each decoded payload (its y, unless told otherwise)."""

    def __init__(self, port: int, auth=None, ca=None, keep=prediction_y):
        self.got: dict = {}
        self._keep = keep
        self.count = 0
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = v5_client(port, f"collector-{uuid.uuid4().hex[:8]}", self._on_message, auth=auth, ca=ca)
        self.client.on_connect = lambda client, *a: client.subscribe("sensors/+/prediction", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.loop_start()
        # Ready only once the broker confirmed the subscription: predictions published before
        # that would not be routed to us (a fresh session has no subscription yet).
        assert self.subscribed.wait(10), "collector could not subscribe"

    def _on_message(self, client, userdata, msg):
        d = json.loads(msg.payload)
        with self.lock:
            self.count += 1
            self.got[(d["stream"], d["seq"])] = self._keep(d)

    def wait_for(self, n: int, timeout: float) -> bool:
        return wait_until(lambda: len(self.got) >= n, timeout, self.lock)

    def shortfall(self, xs: dict, daemon: "DaemonProcess | None" = None, broker=None) -> str:
        """Why predictions are missing, for an assertion message: which ones, what the daemon
        counted, its last warnings, and the broker's log about connections."""
        expected = expected_keys(xs)
        with self.lock:
            missing = sorted(expected - set(self.got), key=lambda k: (k[1], k[0]))
        text = f"{len(expected) - len(missing)} of {len(expected)} predictions; missing e.g. {missing[:8]}"
        if daemon is not None:
            try:
                counts: dict = {}
                for key, value in daemon.metrics().items():
                    name = key.split("{")[0]
                    if name.endswith("_total") and not name.startswith("edgelstm_resets"):
                        label = key[len(name):] if name == "edgelstm_drops_total" else ""
                        counts[name + label] = counts.get(name + label, 0) + value
                text += f"\ndaemon counters: {counts}"
            except OSError as exc:
                text += f"\ndaemon metrics unavailable: {exc}"
            warnings = [ln for ln in daemon.log.read_text().splitlines() if "WARNING" in ln or "ERROR" in ln]
            text += "\ndaemon warnings:\n" + "\n".join(warnings[-15:])
        if broker is not None:
            lines = (broker.dir / "mosquitto.log").read_text(errors="replace").splitlines()
            text += "\nbroker log:\n" + "\n".join(ln for ln in lines[-30:] if "Saving" not in ln)
        return text

    def stop(self):
        stop_client(self.client)


class Publisher:
    """Publishes readings with QoS 1 from a persistent session, optionally paced; counts the
    broker's PUBACKs (messages queued while the broker was away are sent after reconnecting)."""

    def __init__(self, port: int, auth=None, ca=None):
        self.client = v5_client(port, f"publisher-{uuid.uuid4().hex[:8]}", inflight=1000, auth=auth, ca=ca)
        self.acked, self.sent = set(), 0
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.loop_start()
        assert self.connected.wait(10), "publisher could not connect"

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.acked.add(mid)

    def send(self, topic: str, data: bytes):
        info = self.client.publish(topic, data, qos=1)
        if info.rc not in (0, 4):          # success, or queued while disconnected
            raise RuntimeError(f"publish failed: {info.rc}")
        self.sent += 1

    def send_readings(self, xs: dict, rate: float = 0.0, binary_every: int = 0, between=None):
        n = len(next(iter(xs.values())))
        period = 1.0 / rate if rate else 0.0
        t0 = time.time()
        k = 0
        for seq in range(n):
            for sid, x in xs.items():
                if binary_every and k % binary_every == 0:
                    data = encode_binary(seq, x[seq], time.time())
                else:
                    data = json.dumps({"seq": seq, "t": time.time(), "x": x[seq].tolist()}).encode()
                self.send(f"sensors/{sid}/reading", data)
                if between:
                    between(k)
                k += 1
                if period:
                    delay = t0 + k * period - time.time()
                    if delay > 0:
                        time.sleep(delay)

    def wait_all(self, timeout: float) -> bool:
        return wait_until(lambda: len(self.acked) >= self.sent, timeout, self.lock)

    def resend_unanswered(self, xs: dict, collector: "Collector", timeout: float, patience: float = 2.0) -> int:
        """End-to-end retry, as a sender that must lose nothing does when the broker can lose
        what it acknowledged: every `patience` seconds, send again (same seq, same x) each reading
        whose prediction has not arrived. Returns how many readings were sent again."""
        expected = expected_keys(xs)
        deadline, resent = time.time() + timeout, 0
        while not collector.wait_for(len(expected), patience) and time.time() < deadline:
            with collector.lock:
                missing = sorted(expected - set(collector.got), key=lambda k: (k[1], k[0]))
            for sid, seq in missing:
                self.send(f"sensors/{sid}/reading", json.dumps({"seq": seq, "x": xs[sid][seq].tolist()}).encode())
            resent += len(missing)
        return resent

    def stop(self):
        stop_client(self.client)


# -- for the fault tests (test_daemon_faults.py, test_serial_faults.py) --------------------------

import re
import select

_SERIES = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def series(metrics: dict[str, float], name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one family in a DaemonProcess.metrics() dict, as (labels, value)."""
    out = []
    for key, value in metrics.items():
        if key.split("{")[0] == name:
            out.append((dict(_SERIES.findall(key[len(name):])), value))
    return out


def by_label(metrics: dict[str, float], name: str, label: str = "reason") -> dict[str, float]:
    """{label value: count} of a counter family, e.g. by_label(m, "edgelstm_drops_total")."""
    out: dict[str, float] = {}
    for labels, value in series(metrics, name):
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0) + value
    return out


def family_total(metrics: dict[str, float], name: str) -> float:
    return sum(value for _labels, value in series(metrics, name))


def scrape(daemon: DaemonProcess) -> dict[str, float]:
    """daemon.metrics(), split on "\\n" only: the text format's one line separator. (str.splitlines
    also splits inside a label value holding U+0085 or U+2028, which a stream id may.)"""
    text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def wait_metrics(daemon: DaemonProcess, condition, timeout: float) -> dict[str, float]:
    """Poll /metrics until condition(metrics) holds or `timeout` passes; the last metrics either way."""
    deadline = time.time() + timeout
    while True:
        m = scrape(daemon)
        if condition(m) or time.time() >= deadline:
            return m
        time.sleep(0.05)


def poll(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def log_since_mark(daemon: DaemonProcess) -> str:
    return daemon.log.read_text(errors="replace").split("--- start")[-1]


def wait_log(daemon: DaemonProcess, text: str, timeout: float) -> bool:
    """The daemon's log (since its last mark()) shows `text` within `timeout` seconds."""
    return poll(lambda: text in log_since_mark(daemon), timeout)


def broker_connections(broker, client_id: str) -> int:
    """How many times the broker accepted a connection from `client_id` (its log's count)."""
    text = (broker.dir / "mosquitto.log").read_text(errors="replace")
    return text.count(f" as {client_id} (")


def stdout_predictions(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """(stream, seq) -> y of the predictions a daemon with output = "stdout" wrote into its log."""
    got = {}
    for line in path.read_bytes().splitlines():
        if line.startswith(b'{"stream"'):
            try:
                d = json.loads(line)
            except ValueError:                 # a line still being written
                continue
            got[(d["stream"], d["seq"])] = np.array(d["y"], np.float32)
    return got


class Pty:
    """A pseudo-terminal whose slave is reachable through the path `link` (as udev's by-id links
    are). The test writes the board's bytes to `master`; write() fails instead of hanging when the
    daemon stops reading the port."""

    def __init__(self, link):
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        os.symlink(os.ttyname(self.slave), link)

    def write(self, data: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the daemon stopped reading the port: {len(view)} bytes not taken in "
                                         f"{timeout:.0f} s") from None
                select.select([], [self.master], [], 0.05)

    def close(self):
        os.close(self.master)
        os.close(self.slave)
