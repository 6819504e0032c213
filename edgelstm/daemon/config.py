"""Daemon configuration: a TOML file (see edgelstm.example.toml) and/or command-line flags,
into frozen dataclasses, validated once at start-up. Secrets never appear in `redacted()`."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import string
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # Python 3.10 (JetPack 6)
    import tomli as tomllib

POLICIES = ("reset", "hold")
ACKS = ("auto", "checkpoint", "step")
MAX_TOPIC_BYTES = 65_535                # MQTT strings carry a two-byte length
SEQ_MODULUS = 2 ** 32                   # sequence numbers wrap at 32 bits


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
class DaemonConfig:
    model: str = ""
    output: str = "auto"                # "mqtt", "stdout" or "auto" (mqtt when configured)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
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

    def validate(self) -> "DaemonConfig":
        """Refuse, with one line saying what to change, every setting that would fail later. Pure: the
        checks that touch this machine (files, directories, ports) are in preflight()."""
        self._check_inputs_and_outputs()
        if self.mqtt.url:
            _check_url(self.mqtt)
        _check_topics(self.mqtt, needs_stream=self.output_kind == "mqtt")
        _check_stream_prefix(self.serial.stream_prefix)
        self._check_ack()
        self._check_windows()
        _check_ranges(self)
        return self

    def _check_inputs_and_outputs(self) -> None:
        if not self.model:
            raise ConfigError("no model: set `model = \"path\"` in the config or pass --model")
        if not os.path.exists(self.model):
            raise ConfigError(f"model file {self.model!r} does not exist: check the path in `model` or --model")
        if not (self.mqtt.url and self.mqtt.subscribe) and not self.serial.port:
            raise ConfigError("no input: configure [mqtt] url and subscribe, or [serial] port (or --mqtt / --serial)")
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
        if self.mqtt.qos not in (0, 1):
            raise ConfigError("mqtt.qos must be 0 or 1")

    def _check_ack(self) -> None:
        if self.ack not in ACKS:
            raise ConfigError("ack must be 'auto', 'checkpoint' or 'step'")
        if self.ack == "checkpoint" and self.mqtt.url and self.mqtt.subscribe and not self.checkpoint:
            raise ConfigError("ack = 'checkpoint' needs a checkpoint path (or set ack = 'step' or 'auto')")

    def _check_windows(self) -> None:
        p = self.policy
        mqtt_in = bool(self.mqtt.url and self.mqtt.subscribe)
        if mqtt_in and 2 * p.reorder_window > self.mqtt.receive_maximum:
            raise ConfigError(
                f"policy.reorder_window ({p.reorder_window}) must be at most half of mqtt.receive_maximum "
                f"({self.mqtt.receive_maximum}): readings held for reordering stay unacknowledged, and a full "
                f"receive window stops the broker sending the reading they wait for")
        if p.replay_window < 0:
            raise ConfigError("policy.replay_window must be 0 (off) or more")
        if p.reorder_window < 0:
            raise ConfigError("policy.reorder_window must be 0 (off) or more")
        # A jump within either window must stay a gap or a replay, and the jump must be told apart
        # from its wrapped-around twin, which needs it under half the sequence space.
        widest = max(p.reorder_window, p.replay_window)
        if not widest < p.resync_after < SEQ_MODULUS // 2:
            raise ConfigError(
                f"policy.resync_after ({p.resync_after}) must be above reorder_window and replay_window ({widest}) "
                f"and below 2**31: set it in between")

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
        m["url"] = redact_url(self.mqtt.url)
        if m["password_file"]:
            m["password_file"] = "<set>"
        has_password = bool(_split_url(self.mqtt.url).password or self.mqtt.password_file
                            or os.environ.get(self.mqtt.password_env))
        m["password"] = "<set>" if has_password else "<not set>"
        return d


def redact_url(url: str) -> str:
    """The url with any password replaced by ***. Everything between the user's ':' and the last '@'
    goes, so a password that urlsplit would misread (an unescaped '/') is hidden too."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{head}{sep}{user}{':***' if colon else ''}@{hostpart}"


def _split_url(url: str):
    try:
        return urlsplit(url)
    except ValueError as exc:                # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"mqtt.url {redact_url(url)!r} is not a URL ({exc}): write mqtt://host:1883") from None


def _check_url(m: MqttConfig) -> None:
    u = _split_url(m.url)
    shown = redact_url(m.url)
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"mqtt url must start with mqtt:// or mqtts://, got {shown!r}")
    try:
        port = u.port                       # None when the url names none: the scheme's default
    except ValueError:                      # not a number, or above 65535
        port = 0
    if port == 0:
        raise ConfigError(f"mqtt.url {shown!r} has an invalid port: use 1 to 65535, e.g. mqtt://host:1883 "
                          "(percent-encode a '/', '?' or '#' in a password, e.g. '/' as %2F)")
    if u.username is None:
        return
    if m.username or m.password_file:
        raise ConfigError("mqtt.url has credentials and mqtt.username or mqtt.password_file is set too: "
                          "keep only one of them")
    if not u.username and u.password is not None:
        raise ConfigError("mqtt.url has a password but no user name: write mqtt://user:password@host")


def _template_fields(name: str, template: str, allowed: tuple[str, ...]) -> set[str]:
    """The placeholders a topic template uses; a placeholder outside `allowed` or a stray brace is refused
    here rather than by str.format in the middle of publishing."""
    hint = " and ".join("{" + a + "}" for a in allowed)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{name} {template!r} is not a valid template ({exc}): use only {hint}, "
                          "and write a literal brace as '{{' or '}}'") from None
    used = set()
    for _text, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in allowed:
            raise ConfigError(f"{name} {template!r} has the placeholder {{{field_name}}}: only {hint} are allowed")
        if spec or conversion:
            raise ConfigError(f"{name} {template!r}: write {{{field_name}}} without a conversion or format spec")
        used.add(field_name)
    return used


def _check_mqtt_string(what: str, text: str) -> None:
    """What every MQTT topic must be: non-empty UTF-8 without NUL, within the two-byte length."""
    if not text:
        raise ConfigError(f"{what} is empty: MQTT needs a topic of at least one character")
    if "\0" in text:
        raise ConfigError(f"{what} contains a NUL character, which MQTT forbids in topics: remove it")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid UTF-8: write the topic in UTF-8") from None
    if size > MAX_TOPIC_BYTES:
        raise ConfigError(f"{what} is {size} bytes long: MQTT allows at most {MAX_TOPIC_BYTES}, shorten it")


def _check_topic_name(what: str, topic: str) -> None:
    """A topic we publish to: MQTT forbids wildcards in topic names (they are for filters)."""
    _check_mqtt_string(what, topic)
    if "+" in topic or "#" in topic:
        raise ConfigError(f"{what} {topic!r} contains a wildcard ('+' or '#'), which MQTT forbids in the topics "
                          "we publish to: remove it (the client_id counts too)")


def _check_subscribe(topic: str) -> None:
    what = f"mqtt.subscribe {topic!r}"
    _check_mqtt_string(what, topic)
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(f"{what} is not a valid topic filter: '#' may only be the whole last level")
        if "+" in level and level != "+":
            raise ConfigError(f"{what} is not a valid topic filter: '+' must be a whole level, as in "
                              "sensors/+/reading")
    if "#" in levels:
        raise ConfigError(f"{what} must not use '#': exactly one '+' level names the stream, as in sensors/+/reading")
    if levels.count("+") != 1:
        raise ConfigError(f"{what} needs exactly one '+' level: it names the stream, as in sensors/+/reading")


def _check_topics(m: MqttConfig, needs_stream: bool) -> None:
    used = _template_fields("mqtt.publish", m.publish, ("stream", "client_id"))
    if needs_stream and "stream" not in used:
        raise ConfigError(f"mqtt.publish {m.publish!r} has no {{stream}}: every stream's predictions would share "
                          "one topic; add {stream}, as in sensors/{stream}/prediction")
    _check_topic_name("mqtt.publish", m.publish.format(stream="x", client_id=m.client_id))
    _template_fields("mqtt.status_topic", m.status_topic, ("client_id",))
    _check_topic_name("mqtt.status_topic", m.status_topic.format(client_id=m.client_id))
    if m.url and m.subscribe:
        _check_subscribe(m.subscribe)


def _check_stream_prefix(prefix: str) -> None:
    """The stream id goes into the output topic, so it must be a valid topic level."""
    bad = [c for c in prefix if c in "+#/" or unicodedata.category(c) == "Cc"]
    if bad:
        raise ConfigError(f"serial.stream_prefix {prefix!r} contains {bad[0]!r}: the stream id goes into MQTT "
                          "topics, so use no '+', '#', '/' or control characters")


# (section, setting, lowest, highest or None): outside these a value fails later, in paho, in the
# broker (the MQTT fields are two- or four-byte integers) or as a timer that never waits.
_RANGES = (
    ("", "capacity", 1, None),
    ("", "queue_size", 1, None),
    ("", "max_batch", 1, None),
    ("", "linger_s", 0, 0.1),
    ("", "metrics_port", 0, 65_535),
    ("", "checkpoint_interval_s", 0, None),
    ("", "commit_interval_s", 0, None),
    ("", "log_every_s", 0, None),
    ("mqtt", "session_expiry_s", 0, 2 ** 32 - 1),
    ("mqtt", "keepalive_s", 0, 65_535),
    ("mqtt", "max_queued_out", 1, None),
    ("mqtt", "publish_wait_s", 0, None),
    ("mqtt", "max_inflight_out", 1, None),
    ("mqtt", "max_packet_bytes", 1, 2 ** 32 - 1),
    ("mqtt", "receive_maximum", 1, 65_535),
    ("serial", "baud", 1, None),
    ("policy", "max_gap_s", 0, None),
    ("policy", "stream_ttl_s", 0, None),
    ("policy", "reorder_timeout_s", 0, None),
    ("policy", "evict_idle_s", 0, None),
)


def _check_ranges(cfg: DaemonConfig) -> None:
    for section, name, lowest, highest in _RANGES:
        value = getattr(getattr(cfg, section) if section else cfg, name)
        setting = f"{section}.{name}" if section else name
        if value < lowest or highest is not None and value > highest:
            allowed = f"between {lowest} and {highest}" if highest is not None else f"{lowest} or more"
            raise ConfigError(f"{setting} = {value} is out of range: set it {allowed}")
    for section in ("mqtt", "serial"):
        low, high = getattr(cfg, section).reconnect_min_s, getattr(cfg, section).reconnect_max_s
        if not 0 < low <= high:
            raise ConfigError(f"{section}.reconnect_min_s ({low}) must be above 0 and at most "
                              f"{section}.reconnect_max_s ({high}): raise the one or lower the other")


def preflight(cfg: DaemonConfig) -> None:
    """The checks that touch this machine, for a validated config: the files the daemon reads can be
    opened, the checkpoint's directory takes a new file, and the metrics port is free."""
    _check_readable("model", cfg.model)
    if cfg.mqtt.url:
        for name in ("password_file", "tls_ca", "tls_cert", "tls_key"):
            if getattr(cfg.mqtt, name):
                _check_readable(f"mqtt.{name}", getattr(cfg.mqtt, name))
    if cfg.checkpoint:
        _check_checkpoint_dir(cfg.checkpoint)
    if cfg.metrics_port:
        _check_port_free(cfg.metrics_host, cfg.metrics_port)


def _check_readable(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {name} {path} ({exc.strerror}): check the path and that the daemon's "
                          "user may read it") from None


def _check_checkpoint_dir(path: str) -> None:
    """Write and delete a file beside the checkpoint: permission bits alone say nothing for root, nor for a
    read-only mount."""
    if os.path.isdir(path):
        raise ConfigError(f"checkpoint {path} is a directory: name a file in it, e.g. checkpoint = "
                          f"\"{os.path.join(path, 'state.ckpt')}\"")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise ConfigError(f"checkpoint directory {directory} is not a directory: choose another checkpoint "
                              "path, or set checkpoint = \"\" to run without one")
        raise ConfigError(f"checkpoint directory {directory} does not exist: create it (mkdir -p {directory}), "
                          "or set checkpoint = \"\" to run without one")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".edgelstm-preflight-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write in checkpoint directory {directory} ({exc.strerror}): fix its permissions "
                          "for the daemon's user, or set checkpoint = \"\" to run without one") from None


def _check_port_free(host: str, port: int) -> None:
    """Bind the port as the metrics server will (SO_REUSEADDR, so a closing connection does not count)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"metrics_host {host!r} cannot be resolved ({exc.strerror}): set it to an address of "
                          "this machine, e.g. 127.0.0.1") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"metrics port {port} on {host} is in use (by another edgelstm?): choose another "
                                  "metrics_port or 0 to turn metrics off") from None
            raise ConfigError(f"cannot listen on {host}:{port} for metrics ({exc.strerror}): choose another "
                              "metrics_host or metrics_port, or 0 to turn metrics off") from None


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
