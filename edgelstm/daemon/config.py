"""Daemon configuration: a TOML file (see edgelstm.example.toml) and/or command-line flags,
into frozen dataclasses, validated once at start-up (the checks: daemon/validation.py).
Secrets never appear in `redacted()`."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from . import validation

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # Python 3.10 (JetPack 6)
    import tomli as tomllib


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
        u = urlsplit(self.url)
        return u.hostname or "localhost", u.port or (8883 if u.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or bool(self.tls_ca)

    def credentials(self) -> tuple[str, str | None]:
        """(username, password): the URL's user and password when it has them (URL-decoded), else
        `username` and the password from password_file or password_env."""
        u = urlsplit(self.url)
        username = self.username if u.username is None else unquote(u.username)
        password = self.password() if u.password is None else unquote(u.password)
        return username, password

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
    replay_window: int = 32             # a reading sent again among its stream's last N is answered with
                                        # the first prediction (state untouched); 0 = off. Small: the kept
                                        # answers are most of a stream's memory, and a re-sending client
                                        # only re-sends its last few
    resync_after: int = 100_000         # a seq this far ahead of or behind its stream's (mod 2**32) is a
                                        # resynchronisation: counted, applied, the stream moves there
    evict_idle_s: float = 60.0          # bank full: a new stream takes the row of the least recently used
                                        # stream idle this long; if none is, its reading is rejected


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False               # announce each stream's outputs by MQTT discovery (daemon/homeassistant.py)
    prefix: str = "homeassistant"       # Home Assistant's discovery prefix (its MQTT settings)


@dataclass(frozen=True)
class DaemonConfig:
    model: str = ""
    output: str = "auto"                # "mqtt", "stdout" or "auto" (mqtt when configured)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    backend: str = "cpu"                # "cpu", "cuda" (a GPU: Jetson) or "auto" (by measured crossover)
    capacity: int = 4096                # streams held at once
    queue_size: int = 10_000            # unused: the daemon has no internal queue any more; still accepted
                                        # so that older config files load
    max_batch: int = 512                # readings stepped per kernel call
    linger_s: float = 0.0               # after input arrives, wait this long for more before stepping:
                                        # fewer wake-ups per reading (less CPU), that much more latency
    checkpoint: str = ""                # state file; "" = no checkpoints
    checkpoint_interval_s: float = 30.0
    ack: str = "auto"                   # MQTT: acknowledge readings "checkpoint" (durable) or "step";
                                        # "auto" = "checkpoint" when a checkpoint path is set, else "step"
    commit_interval_s: float = 0.2      # with effective ack "checkpoint": how often state is saved and acked
    metrics_port: int = 0               # Prometheus /metrics on this port (0 = off)
    metrics_host: str = "127.0.0.1"
    log_every_s: float = 60.0           # a summary line this often

    def validate(self) -> DaemonConfig:
        """This config, once validation.validate() found nothing that would fail later."""
        validation.validate(self)
        return self

    @property
    def output_kind(self) -> str:
        return ("mqtt" if self.mqtt.url else "stdout") if self.output == "auto" else self.output

    @property
    def effective_ack(self) -> str:
        """The ack mode in force. "auto": durably ("checkpoint") when MQTT readings come in and there
        is a checkpoint to make it so; else "step" (a serial line has no acks, and a checkpoint
        every commit_interval_s would wear an SD card: it is written every checkpoint_interval_s)."""
        if self.ack != "auto":
            return self.ack
        mqtt_in = bool(self.mqtt.url and self.mqtt.subscribe)
        return "checkpoint" if self.checkpoint and mqtt_in else "step"

    def redacted(self) -> dict:
        """The effective configuration as data, with secrets replaced."""
        d = dataclasses.asdict(self)
        m = d["mqtt"]
        m["url"] = validation.redact_url(self.mqtt.url)
        if m["password_file"]:
            m["password_file"] = "<set>"
        has_password = bool(validation.split_url(self.mqtt.url).password or self.mqtt.password_file
                            or os.environ.get(self.mqtt.password_env))
        m["password"] = "<set>" if has_password else "<not set>"
        return d


_SECTIONS = {"mqtt": MqttConfig, "serial": SerialConfig, "policy": PolicyConfig,
             "homeassistant": HomeAssistantConfig}


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
