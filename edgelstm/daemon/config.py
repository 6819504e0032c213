"""Daemon configuration: a TOML file (see edgelstm.example.toml) and/or command-line flags,
into frozen dataclasses, validated once at start-up. Secrets never appear in `redacted()`."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # Python 3.10 (JetPack 6)
    import tomli as tomllib

POLICIES = ("reset", "hold")


@dataclass(frozen=True)
class MqttConfig:
    url: str = ""                       # mqtt://host:1883 or mqtts://host:8883; "" = no MQTT
    client_id: str = "edgelstm"
    subscribe: str = "sensors/+/reading"        # the '+' level names the stream; "" = publish only
    publish: str = "sensors/{stream}/prediction"
    status_topic: str = "edgelstm/{client_id}/status"
    qos: int = 1
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_queued_out: int = 10_000        # predictions waiting to go out (while the broker is away too)
    publish_wait_s: float = 5.0         # connected and max_queued_out full: wait this long, then drop
    max_inflight_out: int = 1000        # unacknowledged predictions (at most the broker's Receive Maximum)
    max_packet_bytes: int = 65_536
    receive_maximum: int = 5_000        # unacknowledged readings the broker may send us
    username: str = ""
    password_env: str = "EDGELSTM_MQTT_PASSWORD"
    password_file: str = ""
    tls_ca: str = ""                    # CA file; set (or use mqtts://) to enable TLS
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.url)
        return u.hostname or "localhost", u.port or (8883 if u.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts" or bool(self.tls_ca)

    def password(self) -> str | None:
        if self.password_file:
            try:
                with open(self.password_file) as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read mqtt.password_file: {exc}") from None
        return os.environ.get(self.password_env) or None


@dataclass(frozen=True)
class SerialConfig:
    port: str = ""                      # e.g. /dev/ttyUSB0 (prefer /dev/serial/by-id/...); "" = none
    baud: int = 115_200
    mode: str = "frames"                # "frames" (PROTOCOL.md) or "lines" (CSV/JSON per line)
    stream_prefix: str = ""             # stream id = prefix + the frame's stream number
    reply: bool = False                 # frames mode: send each PREDICTION back to the board too
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0


@dataclass(frozen=True)
class PolicyConfig:
    nonfinite: str = "hold"             # a NaN/Inf reading: "reset" the stream or "hold" its state
    reboot: str = "reset"               # the sender rebooted (new boot id, seq back to 0)
    max_gap_s: float = 0.0              # readings further apart than this (by their t) ... 0 = off
    gap: str = "reset"                  # ... trigger this policy
    stream_ttl_s: float = 3600.0        # forget streams idle this long (0 = never)
    reorder_window: int = 1000          # readings that skip ahead wait for the missing ones, up to
    reorder_timeout_s: float = 10.0     # this many per stream and this long; then the gap is counted
    replay_window: int = 256            # a reading sent again among its stream's last N is answered with
                                        # the first prediction (state untouched); 0 = off


@dataclass(frozen=True)
class DaemonConfig:
    model: str = ""
    output: str = "auto"                # "mqtt", "stdout" or "auto" (mqtt when configured)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    backend: str = "cpu"                # "cpu", "cuda" (a GPU: Jetson) or "auto" (by measured crossover)
    capacity: int = 4096                # streams held at once
    queue_size: int = 10_000            # readings waiting for the inference thread
    max_batch: int = 512                # readings stepped per kernel call
    checkpoint: str = ""                # state file; "" = no checkpoints
    checkpoint_interval_s: float = 30.0
    ack: str = "checkpoint"             # MQTT: acknowledge readings "checkpoint" (durable) or "step"
    commit_interval_s: float = 0.2      # with ack = "checkpoint": how often state is saved and acked
    metrics_port: int = 0               # Prometheus /metrics on this port (0 = off)
    metrics_host: str = "127.0.0.1"
    log_every_s: float = 60.0           # a summary line this often

    def validate(self) -> "DaemonConfig":
        if not self.model:
            raise ConfigError("no model: set `model = \"path\"` in the config or pass --model")
        if not os.path.exists(self.model):
            raise ConfigError(f"model file {self.model!r} does not exist")
        if not (self.mqtt.url and self.mqtt.subscribe) and not self.serial.port:
            raise ConfigError("no input: configure [mqtt] url and subscribe, or [serial] port (or --mqtt / --serial)")
        if self.mqtt.url and urlparse(self.mqtt.url).scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"mqtt url must start with mqtt:// or mqtts://, got {self.mqtt.url!r}")
        if self.mqtt.url and self.mqtt.subscribe and self.mqtt.subscribe.count("+") != 1:
            raise ConfigError("mqtt.subscribe needs exactly one '+' level: it names the stream")
        if self.backend not in ("cpu", "cuda", "auto"):
            raise ConfigError("backend must be 'cpu', 'cuda' or 'auto'")
        if self.output not in ("auto", "mqtt", "stdout"):
            raise ConfigError("output must be 'auto', 'mqtt' or 'stdout'")
        if self.output == "mqtt" and not self.mqtt.url:
            raise ConfigError("output = 'mqtt' needs [mqtt] url")
        if self.serial.mode not in ("frames", "lines"):
            raise ConfigError("serial.mode must be 'frames' or 'lines'")
        if self.serial.reply and self.serial.mode != "frames":
            raise ConfigError("serial.reply needs serial.mode = 'frames' (lines carry no predictions back)")
        for name in ("nonfinite", "reboot", "gap"):
            if getattr(self.policy, name) not in POLICIES:
                raise ConfigError(f"policy.{name} must be one of {POLICIES}")
        if self.ack not in ("checkpoint", "step"):
            raise ConfigError("ack must be 'checkpoint' or 'step'")
        if self.ack == "checkpoint" and self.mqtt.url and self.mqtt.subscribe and not self.checkpoint:
            raise ConfigError("ack = 'checkpoint' needs a checkpoint path (or set ack = 'step')")
        if self.mqtt.url and self.mqtt.subscribe and 2 * self.policy.reorder_window > self.mqtt.receive_maximum:
            raise ConfigError(
                f"policy.reorder_window ({self.policy.reorder_window}) must be at most half of mqtt.receive_maximum "
                f"({self.mqtt.receive_maximum}): readings held for reordering stay unacknowledged, and a full "
                f"receive window stops the broker sending the reading they wait for")
        if self.mqtt.qos not in (0, 1):
            raise ConfigError("mqtt.qos must be 0 or 1")
        if self.mqtt.url and self.mqtt.subscribe and self.mqtt.qos and self.mqtt.receive_maximum > self.queue_size:
            raise ConfigError(
                f"mqtt.receive_maximum ({self.mqtt.receive_maximum}) must be at most queue_size ({self.queue_size}): "
                "then the broker stops sending before the queue is full, and paho's thread never waits on it "
                "(it must stay free to take the broker's confirmations of our predictions)")
        if self.policy.replay_window < 0:
            raise ConfigError("policy.replay_window must be 0 (off) or more")
        for name in ("capacity", "queue_size", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        return self

    @property
    def output_kind(self) -> str:
        return ("mqtt" if self.mqtt.url else "stdout") if self.output == "auto" else self.output

    def redacted(self) -> dict:
        """The effective configuration as data, with secrets replaced."""
        d = dataclasses.asdict(self)
        if d["mqtt"]["password_file"]:
            d["mqtt"]["password_file"] = "<set>"
        d["mqtt"]["password"] = "<set>" if os.environ.get(self.mqtt.password_env) else "<not set>"
        return d


_SECTIONS = {"mqtt": MqttConfig, "serial": SerialConfig, "policy": PolicyConfig}


def _type_ok(default, value) -> bool:
    """The value has the setting's type; an int is fine for a float, a bool never for a number."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    return isinstance(value, type(default)) or isinstance(default, float) and isinstance(value, int)


def _build(cls, data: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}{key!r}; known: {sorted(known)}")
        if key in _SECTIONS and cls is DaemonConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            value = _build(_SECTIONS[key], value, f"{key}.")
        else:
            if not _type_ok(known[key].default, value):
                raise ConfigError(f"{where}{key} must be {type(known[key].default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load(path: str | None = None, overrides: dict | None = None) -> DaemonConfig:
    """Config from a TOML file (optional) with `overrides` (dotted keys, e.g. "mqtt.url") on top."""
    data: dict = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _build(DaemonConfig, data, "")
