"""Checks of a daemon config, each refusing with one line that says what to change.

validate() is pure: every setting that would fail later, in paho, in the broker or in the middle
of publishing. preflight() touches this machine: the files the daemon reads, the checkpoint's
directory, the metrics port.
"""

from __future__ import annotations

import errno
import os
import socket
import string
import tempfile
import unicodedata
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..protocol.topics import SHARE_PREFIX, split_share, subscription_matches

if TYPE_CHECKING:
    from .config import DaemonConfig, MqttConfig

POLICIES = ("reset", "hold")
ACKS = ("auto", "checkpoint", "step")
MAX_TOPIC_BYTES = 65_535                # MQTT strings carry a two-byte length
SEQ_MODULUS = 2 ** 32                   # sequence numbers wrap at 32 bits
SAMPLE_STREAM = "s1"                    # stands for any stream in a topic template


def validate(cfg: DaemonConfig) -> None:
    """Refuse, with one line saying what to change, every setting that would fail later. Pure: the
    checks that touch this machine (files, directories, ports) are in preflight()."""
    _check_inputs_and_outputs(cfg)
    if cfg.mqtt.url:
        _check_url(cfg.mqtt)
    _check_topics(cfg.mqtt, publishes=cfg.output_kind == "mqtt")
    _check_stream_prefix(cfg.serial.stream_prefix)
    _check_homeassistant(cfg)
    _check_ack(cfg)
    _check_windows(cfg)
    _check_ranges(cfg)


def validate_links(cfg: DaemonConfig) -> None:
    """The checks of validate() that concern the inputs only ([mqtt] and [serial]), for a command
    that reads readings without a model or outputs: edgelstm record."""
    if not (cfg.mqtt.url and cfg.mqtt.subscribe) and not cfg.serial.port:
        raise ConfigError("no input: pass --mqtt URL (with --in TOPIC) or --serial PORT")
    if cfg.serial.mode not in ("frames", "lines"):
        raise ConfigError("serial.mode must be 'frames' or 'lines'")
    if cfg.mqtt.url:
        _check_url(cfg.mqtt)
    _check_topics(cfg.mqtt, publishes=False)
    _check_stream_prefix(cfg.serial.stream_prefix)
    _check_ranges(cfg)


def validate_stepping(cfg: DaemonConfig) -> None:
    """The checks of validate() that concern how streams are stepped ([policy], capacity, backend),
    for a command that steps readings without links or outputs: edgelstm replay."""
    if cfg.backend not in ("cpu", "cuda", "auto"):
        raise ConfigError("backend must be 'cpu', 'cuda' or 'auto'")
    _check_policies(cfg)
    _check_windows(cfg)
    _check_ranges(cfg)


def _check_policies(cfg: DaemonConfig) -> None:
    for name in ("nonfinite", "reboot", "gap"):
        if getattr(cfg.policy, name) not in POLICIES:
            raise ConfigError(f"policy.{name} must be one of {POLICIES}")


def _check_inputs_and_outputs(cfg: DaemonConfig) -> None:
    if not cfg.model:
        raise ConfigError("no model: set `model = \"path\"` in the config or pass --model")
    if not os.path.exists(cfg.model):
        raise ConfigError(f"model file {cfg.model!r} does not exist: check the path in `model` or --model")
    if not (cfg.mqtt.url and cfg.mqtt.subscribe) and not cfg.serial.port:
        raise ConfigError("no input: configure [mqtt] url and subscribe, or [serial] port (or --mqtt / --serial)")
    if cfg.backend not in ("cpu", "cuda", "auto"):
        raise ConfigError("backend must be 'cpu', 'cuda' or 'auto'")
    if cfg.output not in ("auto", "mqtt", "stdout"):
        raise ConfigError("output must be 'auto', 'mqtt' or 'stdout'")
    if cfg.output == "mqtt" and not cfg.mqtt.url:
        raise ConfigError("output = 'mqtt' needs [mqtt] url")
    if cfg.serial.mode not in ("frames", "lines"):
        raise ConfigError("serial.mode must be 'frames' or 'lines'")
    if cfg.serial.reply and cfg.serial.mode != "frames":
        raise ConfigError("serial.reply needs serial.mode = 'frames' (lines carry no predictions back)")
    _check_policies(cfg)
    if cfg.mqtt.qos not in (0, 1):
        raise ConfigError("mqtt.qos must be 0 or 1")

def _check_ack(cfg: DaemonConfig) -> None:
    if cfg.ack not in ACKS:
        raise ConfigError("ack must be 'auto', 'checkpoint' or 'step'")
    if cfg.ack == "checkpoint" and cfg.mqtt.url and cfg.mqtt.subscribe and not cfg.checkpoint:
        raise ConfigError("ack = 'checkpoint' needs a checkpoint path (or set ack = 'step' or 'auto')")

def _check_windows(cfg: DaemonConfig) -> None:
    p = cfg.policy
    mqtt_in = bool(cfg.mqtt.url and cfg.mqtt.subscribe)
    if mqtt_in and 2 * p.reorder_window > cfg.mqtt.receive_maximum:
        raise ConfigError(
            f"policy.reorder_window ({p.reorder_window}) must be at most half of mqtt.receive_maximum "
            f"({cfg.mqtt.receive_maximum}): readings held for reordering stay unacknowledged, and a full "
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


def split_url(url: str):
    try:
        return urlsplit(url)
    except ValueError as exc:                # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"mqtt.url {redact_url(url)!r} is not a URL ({exc}): write mqtt://host:1883") from None


def _check_url(m: MqttConfig) -> None:
    u = split_url(m.url)
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
    group, topic_filter = split_share(topic)
    if group is not None and not (group and topic_filter and "+" not in group and "#" not in group):
        raise ConfigError(f"{what} is not a valid shared subscription: write {SHARE_PREFIX}GROUP/filter, GROUP "
                          "without '+' or '#', as in $share/edgelstm/sensors/+/reading")
    levels = topic_filter.split("/")
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


def _check_topics(m: MqttConfig, publishes: bool) -> None:
    used = _template_fields("mqtt.publish", m.publish, ("stream", "client_id"))
    if publishes and "stream" not in used:
        raise ConfigError(f"mqtt.publish {m.publish!r} has no {{stream}}: every stream's predictions would share "
                          "one topic; add {stream}, as in sensors/{stream}/prediction")
    _check_topic_name("mqtt.publish", m.publish.format(stream=SAMPLE_STREAM, client_id=m.client_id))
    _template_fields("mqtt.status_topic", m.status_topic, ("client_id",))
    _check_topic_name("mqtt.status_topic", m.status_topic.format(client_id=m.client_id))
    if m.url and m.subscribe:
        _check_subscribe(m.subscribe)
        if publishes:
            _check_no_loop(m)


def _check_no_loop(m: MqttConfig) -> None:
    """Predictions published where the subscription matches come back as readings: the daemon would
    answer its own answers, in a loop. One stream name stands for all, as a '+' level matches any."""
    topic = m.publish.format(stream=SAMPLE_STREAM, client_id=m.client_id)
    if subscription_matches(m.subscribe, topic):
        raise ConfigError(f"mqtt.publish {m.publish!r} is matched by mqtt.subscribe {m.subscribe!r} (e.g. {topic!r}): "
                          "the daemon would read its own predictions back as readings, in a loop; publish where "
                          "the subscription does not match, as sensors/{stream}/prediction for sensors/+/reading")


def _check_homeassistant(cfg: DaemonConfig) -> None:
    """Discovery configs point Home Assistant at the MQTT prediction topics: without those they point
    nowhere. The prefix is a topic of its own levels, not matched by the subscription."""
    if not cfg.homeassistant.enabled:
        return
    if cfg.output_kind != "mqtt":
        raise ConfigError("homeassistant.enabled needs predictions published over MQTT: set [mqtt] url (--mqtt or "
                          "--out-mqtt) with output 'auto' or 'mqtt', or set [homeassistant] enabled = false")
    prefix = cfg.homeassistant.prefix
    if not prefix or prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError(f"homeassistant.prefix {prefix!r} must be Home Assistant's discovery prefix, without a "
                          "leading or trailing '/': its default is homeassistant")
    _check_topic_name("homeassistant.prefix", prefix)
    # imported here: that module imports the config, which imports this one
    from .homeassistant import safe_id
    sample = f"{prefix}/sensor/{safe_id(cfg.mqtt.client_id)}/{SAMPLE_STREAM}_y0/config"
    if cfg.mqtt.subscribe and subscription_matches(cfg.mqtt.subscribe, sample):
        raise ConfigError(f"homeassistant.prefix {prefix!r}: mqtt.subscribe {cfg.mqtt.subscribe!r} matches the "
                          f"discovery topics (e.g. {sample!r}), so the daemon would read them as readings; choose "
                          "a prefix the subscription does not match")


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
