"""Configuration, check-config, systemd notification and the checkpoint file."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from edgelstm.daemon import checkpoint, config
from edgelstm.errors import ConfigError

MODEL = str(ROOT / "edgelstm" / "data" / "activity.elstm")


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgelstm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)


def test_example_config_is_valid_and_secrets_are_redacted():
    env = dict(os.environ, EDGELSTM_MQTT_PASSWORD="hunter2")
    out = cli("check-config", "-c", "edgelstm.example.toml", env=env)
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
    with pytest.raises(ConfigError, match=r"receive_maximum \(5000\) must be at most queue_size \(1000\)"):
        config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h", "checkpoint": "/tmp/x",
                           "queue_size": 1000}).validate()
    out = cli("run", "--model", MODEL)
    assert out.returncode == 1 and "no input" in out.stderr and "Traceback" not in out.stderr


def test_checkpoint_round_trip_and_corruption(tmp_path):
    path = str(tmp_path / "s.ckpt")
    states = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    streams = [{"id": f"s{i}", "last_seq": i, "boot": None, "last_t": None} for i in range(3)]
    checkpoint.save(path, checkpoint.Checkpoint("abc", 5, streams, states))
    back = checkpoint.load(path)
    assert back.streams == streams and np.array_equal(back.states, states)
    data = bytearray(open(path, "rb").read())
    data[40] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(path)


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
