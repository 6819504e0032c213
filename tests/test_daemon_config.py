"""Configuration, check-config, systemd notification and the checkpoint file."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from edgelstm.daemon import checkpoint, config, validation
from edgelstm.errors import ConfigError

MODEL = str(ROOT / "edgelstm" / "data" / "activity.elstm")


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgelstm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)


@pytest.mark.integration
def test_example_config_is_valid_and_secrets_are_redacted(tmp_path):
    assert config.load(str(ROOT / "edgelstm.example.toml")).validate().effective_ack == "checkpoint"
    env = dict(os.environ, EDGELSTM_MQTT_PASSWORD="hunter2")
    # check-config also runs preflight: the example's /var/lib/edgelstm and port 9108 belong to a deployment
    out = cli("check-config", "-c", "edgelstm.example.toml", "--checkpoint", str(tmp_path / "state.ckpt"),
              "--metrics-port", "0", env=env)
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout + out.stderr and '"password": "<set>"' in out.stdout


@pytest.mark.parametrize("text,message", [
    ("model = 3", "model must be str"),
    ('model = "m"\nbogus = 1', "unknown setting 'bogus'"),
    ('model = "m"\n[mqtt]\nurll = "x"', "unknown setting mqtt.'urll'"),
    ("model = ", "not valid TOML"),
])
def test_bad_configs_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("'", ".")):
        config.load(str(path))


def test_flags_alone_make_a_config_and_are_validated():
    cfg = config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h:1884", "checkpoint": "/tmp/x"}).validate()
    assert cfg.mqtt.host_port == ("h", 1884) and cfg.output_kind == "mqtt"
    with pytest.raises(ConfigError, match="no input"):
        config.load(None, {"model": MODEL}).validate()
    with pytest.raises(ConfigError, match="exactly one '\\+'"):
        config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h", "mqtt.subscribe": "a/b",
                           "checkpoint": "/tmp/x"}).validate()
    with pytest.raises(ConfigError, match="at most half of mqtt.receive_maximum"):
        config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h", "checkpoint": "/tmp/x",
                           "mqtt.receive_maximum": 200}).validate()
    # queue_size is accepted (older config files) and no longer constrains anything
    config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h", "checkpoint": "/tmp/x", "queue_size": 1000}).validate()


@pytest.mark.integration
def test_the_command_line_validates_its_flags():
    out = cli("run", "--model", MODEL)
    assert out.returncode == 1 and "no input" in out.stderr and "Traceback" not in out.stderr
    out = cli("check-config", "--model", MODEL, "--mqtt", "mqtt://h", "--in", "sensors/+/reading",
              "--out", "sensors/{stream}/prediction")
    assert out.returncode == 0, out.stderr


MQTT_IN = {"model": MODEL, "mqtt.url": "mqtt://h", "checkpoint": "/tmp/x"}


@pytest.mark.parametrize("overrides,message", [
    ({"mqtt.publish": "sensors/{strem}/prediction"}, "has the placeholder {strem}: only {stream} and {client_id}"),
    ({"mqtt.publish": "sensors/{}/prediction"}, "has the placeholder {}: only"),
    ({"mqtt.publish": "sensors/{0}/prediction"}, "has the placeholder {0}: only"),
    ({"mqtt.publish": "sensors/{stream/prediction"}, "is not a valid template"),
    ({"mqtt.publish": "sensors/{stream}}/prediction"}, "is not a valid template"),
    ({"mqtt.publish": "sensors/{stream!r}"}, "without a conversion or format spec"),
    ({"mqtt.publish": "sensors/prediction"}, "has no {stream}"),
    ({"mqtt.publish": "sensors/+/{stream}"}, "contains a wildcard"),
    ({"mqtt.publish": "sensors/{stream}/#"}, "contains a wildcard"),
    ({"mqtt.publish": "{client_id}/{stream}", "mqtt.client_id": "a+b"}, "contains a wildcard"),
    ({"mqtt.publish": "s\0/{stream}"}, "contains a NUL"),
    ({"mqtt.publish": "s" * 65_535 + "/{stream}"}, "MQTT allows at most 65535"),
    ({"mqtt.status_topic": "edgelstm/{stream}/status"}, "has the placeholder {stream}: only {client_id}"),
    ({"mqtt.status_topic": "edgelstm/{client_id"}, "mqtt.status_topic 'edgelstm/{client_id' is not a valid"),
    ({"mqtt.status_topic": ""}, "mqtt.status_topic is empty"),
    ({"mqtt.client_id": "a#"}, "mqtt.status_topic 'edgelstm/a#/status' contains a wildcard"),
    ({"mqtt.subscribe": "sensors/a+/reading"}, "'+' must be a whole level"),
    ({"mqtt.subscribe": "sensors/#"}, "must not use '#'"),
    ({"mqtt.subscribe": "sensors/#/+"}, "'#' may only be the whole last level"),
    ({"mqtt.subscribe": "sensors/r#"}, "'#' may only be the whole last level"),
    ({"mqtt.subscribe": "+/+/reading"}, "needs exactly one '+' level"),
    ({"mqtt.subscribe": "sensors/+/r\0"}, "contains a NUL"),
    ({"mqtt.subscribe": "+/" + "s" * 65_534}, "MQTT allows at most 65535"),
    ({"mqtt.subscribe": "$share//sensors/+/reading"}, "is not a valid shared subscription: write $share/GROUP/"),
    ({"mqtt.subscribe": "$share/edgelstm"}, "is not a valid shared subscription"),
    ({"mqtt.subscribe": "$share/g+/sensors/+/reading"}, "is not a valid shared subscription"),
    ({"mqtt.subscribe": "$share/g/sensors/reading"}, "needs exactly one '+' level"),
    ({"mqtt.subscribe": "sensors/+/data", "mqtt.publish": "sensors/{stream}/data"},
     "mqtt.publish 'sensors/{stream}/data' is matched by mqtt.subscribe 'sensors/+/data' (e.g. 'sensors/s1/data')"
     ": the daemon would read its own predictions back as readings, in a loop; publish where"),
    ({"mqtt.subscribe": "$share/g/sensors/+/reading", "mqtt.publish": "sensors/{stream}/reading"},
     "is matched by mqtt.subscribe '$share/g/sensors/+/reading'"),
    ({"mqtt.subscribe": "+/in", "mqtt.publish": "{stream}/in"}, "is matched by mqtt.subscribe '+/in'"),
    ({"mqtt.subscribe": "edge/+/in", "mqtt.publish": "{client_id}/{stream}/in", "mqtt.client_id": "edge"},
     "is matched by mqtt.subscribe 'edge/+/in' (e.g. 'edge/s1/in')"),
    ({"serial.port": "/dev/ttyX", "serial.stream_prefix": "a/"}, "stream_prefix 'a/' contains '/'"),
    ({"serial.port": "/dev/ttyX", "serial.stream_prefix": "a+"}, "contains '+'"),
    ({"serial.port": "/dev/ttyX", "serial.stream_prefix": "#"}, "contains '#'"),
    ({"serial.port": "/dev/ttyX", "serial.stream_prefix": "a\n"}, "contains '\\n'"),
    ({"serial.port": "/dev/ttyX", "serial.stream_prefix": "a\0"}, "contains '\\x00'"),
    ({"mqtt.url": "mqtt://h:99999"}, "has an invalid port"),
    ({"mqtt.url": "mqtt://h:abc"}, "has an invalid port"),
    ({"mqtt.url": "mqtt://h:0"}, "has an invalid port"),
    ({"mqtt.url": "mqtt://[::1"}, "is not a URL"),
    ({"mqtt.url": "http://h"}, "must start with mqtt:// or mqtts://"),
    ({"mqtt.url": "mqtt://u:p@h", "mqtt.username": "v"}, "keep only one of them"),
    ({"mqtt.url": "mqtt://u:p@h", "mqtt.password_file": "/run/pw"}, "keep only one of them"),
    ({"mqtt.url": "mqtt://:p@h"}, "a password but no user name"),
    ({"ack": "sometimes"}, "ack must be 'auto', 'checkpoint' or 'step'"),
    ({"ack": "checkpoint", "checkpoint": ""}, "ack = 'checkpoint' needs a checkpoint path"),
    ({"policy.resync_after": 1000}, "policy.resync_after (1000) must be above"),
    ({"policy.resync_after": 2 ** 31}, "and below 2**31"),
    ({"policy.replay_window": 200_000}, "policy.resync_after (100000) must be above"),
    ({"policy.reorder_window": -1}, "policy.reorder_window must be 0 (off) or more"),
    ({"policy.evict_idle_s": -1.0}, "policy.evict_idle_s = -1.0 is out of range: set it 0 or more"),
    ({"metrics_port": 99_999}, "metrics_port = 99999 is out of range: set it between 0 and 65535"),
    ({"metrics_port": -1}, "metrics_port = -1 is out of range"),
    ({"capacity": 0}, "capacity = 0 is out of range: set it 1 or more"),
    ({"max_batch": 0}, "max_batch = 0 is out of range"),
    ({"mqtt.receive_maximum": 70_000, "queue_size": 100_000}, "mqtt.receive_maximum = 70000 is out of range"),
    ({"mqtt.keepalive_s": 70_000}, "mqtt.keepalive_s = 70000 is out of range"),
    ({"mqtt.reconnect_min_s": 0.0}, "mqtt.reconnect_min_s (0.0) must be above 0"),
    ({"serial.reconnect_min_s": 9.0}, "serial.reconnect_min_s (9.0) must be above 0 and at most"),
])
def test_settings_that_would_fail_later_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        config.load(None, {**MQTT_IN, **overrides}).validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides", [
    {"mqtt.subscribe": "$share/edgelstm/sensors/+/reading"},
    {"mqtt.subscribe": "sensors/+/reading", "mqtt.publish": "sensors/{stream}/readings"},
    {"mqtt.subscribe": "$share/sensors/+/reading/x", "mqtt.publish": "sensors/{stream}/reading/x"},
    # predictions printed, not published: the template cannot loop
    {"mqtt.subscribe": "sensors/+/data", "mqtt.publish": "sensors/{stream}/data", "output": "stdout"},
])
def test_topics_that_cannot_loop_are_accepted(overrides):
    config.load(None, {**MQTT_IN, **overrides}).validate()


def test_url_credentials_are_used_and_never_shown(monkeypatch):
    monkeypatch.setenv("EDGELSTM_MQTT_PASSWORD", "from-env")
    cfg = config.load(None, {**MQTT_IN, "mqtt.url": "mqtt://alice:s3cr%40t-pw@broker:1884"}).validate()
    assert cfg.mqtt.credentials() == ("alice", "s3cr@t-pw") and cfg.mqtt.host_port == ("broker", 1884)
    shown = json.dumps(cfg.redacted())
    assert "s3cr" not in shown and "t-pw" not in shown
    assert cfg.redacted()["mqtt"]["url"] == "mqtt://alice:***@broker:1884"
    assert cfg.redacted()["mqtt"]["password"] == "<set>"
    # A user in the URL alone takes the password from the environment, as username does.
    assert config.load(None, {"mqtt.url": "mqtt://alice@h"}).mqtt.credentials() == ("alice", "from-env")
    # A '/' in a password ends the host part: refused, and the message still hides the password.
    with pytest.raises(ConfigError, match="invalid port") as info:
        config.load(None, {**MQTT_IN, "mqtt.url": "mqtt://alice:pa/ss@h"}).validate()
    assert "pa/ss" not in str(info.value) and "mqtt://alice:***@h" in str(info.value)


def test_username_and_password_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELSTM_MQTT_PASSWORD", "from-env")
    cfg = config.load(None, {**MQTT_IN, "mqtt.username": "bob"}).validate()
    assert cfg.mqtt.credentials() == ("bob", "from-env") == (cfg.mqtt.username, cfg.mqtt.password())
    (tmp_path / "pw").write_text("from-file\n")
    cfg = config.load(None, {**MQTT_IN, "mqtt.username": "bob", "mqtt.password_file": str(tmp_path / "pw")})
    assert cfg.validate().mqtt.credentials() == ("bob", "from-file")
    assert "from-file" not in json.dumps(cfg.redacted()) and cfg.redacted()["mqtt"]["password"] == "<set>"
    monkeypatch.delenv("EDGELSTM_MQTT_PASSWORD")
    assert config.load(None, MQTT_IN).mqtt.credentials() == ("", None)
    assert config.load(None, MQTT_IN).redacted()["mqtt"]["password"] == "<not set>"


def test_ack_auto_follows_the_checkpoint():
    flags = {"model": MODEL, "mqtt.url": "mqtt://h", "mqtt.subscribe": "sensors/+/reading", "output": "mqtt",
             "mqtt.publish": "sensors/{stream}/prediction"}
    cfg = config.load(None, flags).validate()
    assert cfg.ack == "auto" and cfg.effective_ack == "step"
    assert config.load(None, {**flags, "checkpoint": "/tmp/x"}).validate().effective_ack == "checkpoint"
    assert config.load(None, {**flags, "checkpoint": "/tmp/x", "ack": "step"}).validate().effective_ack == "step"


SERIAL_IN = {"model": MODEL, "serial.port": "/dev/ttyX"}


def test_preflight_passes_and_leaves_nothing_behind(tmp_path):
    validation.preflight(config.load(None, {**SERIAL_IN, "checkpoint": str(tmp_path / "state.ckpt")}).validate())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where,message", [
    ("missing/state.ckpt", "missing does not exist: create it (mkdir -p"),
    ("afile/state.ckpt", "afile is not a directory"),
    ("adir", "adir is a directory: name a file in it"),
])
def test_preflight_refuses_an_unusable_checkpoint_dir(tmp_path, where, message):
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    cfg = config.load(None, {**SERIAL_IN, "checkpoint": str(tmp_path / where)}).validate()
    with pytest.raises(ConfigError, match=re.escape(message)):
        validation.preflight(cfg)


def test_preflight_refuses_an_unreadable_model(tmp_path):
    cfg = config.load(None, {**SERIAL_IN, "model": str(tmp_path)}).validate()
    with pytest.raises(ConfigError, match=r"cannot read model .* \(Is a directory\)"):
        validation.preflight(cfg)


def test_preflight_refuses_a_busy_metrics_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = config.load(None, {**SERIAL_IN, "metrics_port": port}).validate()
        with pytest.raises(ConfigError, match=re.escape(
                f"metrics port {port} on 127.0.0.1 is in use (by another edgelstm?): choose another metrics_port "
                "or 0 to turn metrics off")):
            validation.preflight(cfg)
    validation.preflight(cfg)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    path = str(tmp_path / "s.ckpt")
    states = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    streams = [{"id": f"s{i}", "last_seq": i, "boot": None, "last_t": None} for i in range(3)]
    checkpoint.save(path, checkpoint.Checkpoint.of("abc", 5, streams, states))
    back = checkpoint.load(path)
    assert back.streams == streams and np.array_equal(back.states, states)
    data = bytearray(open(path, "rb").read())
    data[40] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(path)


@pytest.mark.integration
def test_systemd_ready_and_watchdog_and_corrupt_checkpoint_does_not_block_start(tmp_path):
    """Run the daemon under a fake NOTIFY_SOCKET: READY=1 after the model is compiled, WATCHDOG=1
    from the loop, STOPPING=1 on SIGTERM, exit 0; a corrupt checkpoint is reported and skipped."""
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    master, slave = os.openpty()
    (tmp_path / "state.ckpt").write_bytes(b"ELSTMCK1 garbage")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="200000")
    proc = subprocess.Popen([sys.executable, "-m", "edgelstm", "run", "--model", MODEL, "--serial",
                             os.ttyname(slave), "--checkpoint", str(tmp_path / "state.ckpt"), "--out", "stdout"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = [sock.recv(256).decode() for _ in range(3)]
        assert got[0].startswith("READY=1") and "WATCHDOG=1" in got[1:]
        time.sleep(0.3)
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "checkpoint" in err and "unusable" in err and "stopped cleanly" in err
    finally:
        proc.kill()
        sock.close()
        os.close(master)
        os.close(slave)
