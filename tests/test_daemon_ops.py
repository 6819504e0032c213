"""Operating the daemon: authentication without leaking the password, SIGHUP model reload, TLS,
what the broker said to the subscription."""

import logging
import os
import shutil
import signal
import time

import numpy as np
import pytest
from broker import Broker
from daemon_helpers import MODEL, Collector, DaemonProcess, Publisher, offline, readings
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edgelstm.daemon.config import MqttConfig
from edgelstm.transports.mqtt_link import MqttLink

SECRET = "s3cret-Pa55word"


@pytest.mark.integration
def test_username_password_from_environment_never_logged(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", user=("edge", SECRET)).start()
    try:
        daemon = DaemonProcess(tmp_path, broker.url, mqtt_extra='username = "edge"')
        daemon.start(env_extra={"EDGELSTM_MQTT_PASSWORD": SECRET})
        auth = ("edge", SECRET)
        collector, pub = Collector(broker.port, auth=auth), Publisher(broker.port, auth=auth)
        xs = readings(2, 20)
        pub.send_readings(xs)
        assert pub.wait_all(20) and collector.wait_for(40, 30)
        assert daemon.terminate() == 0
        assert SECRET not in daemon.log.read_text()
        # a wrong password: refused, logged without the secret, the daemon keeps trying and stays up
        (tmp_path / "w").mkdir()
        wrong = DaemonProcess(tmp_path / "w", broker.url,
                              mqtt_extra='username = "edge"')
        wrong.start(wait_connected=False, env_extra={"EDGELSTM_MQTT_PASSWORD": "nope-" + SECRET})
        deadline = time.time() + 15
        while "refused" not in wrong.log.read_text() and time.time() < deadline:
            time.sleep(0.1)
        text = wrong.log.read_text()
        assert "refused" in text and SECRET not in text and wrong.proc.poll() is None
        assert wrong.terminate() == 0
    finally:
        broker.stop()


@pytest.mark.integration
def test_sighup_reloads_the_model_and_keeps_state(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    model = tmp_path / "model.elstm"
    shutil.copy(MODEL, model)
    try:
        daemon = DaemonProcess(tmp_path, broker.url)
        daemon.config.write_text(daemon.config.read_text().replace(str(MODEL), str(model)))
        daemon.start()
        collector, pub = Collector(broker.port), Publisher(broker.port)
        xs = readings(3, 60, seed=8)
        first = {sid: x[:30] for sid, x in xs.items()}
        pub.send_readings(first)
        assert collector.wait_for(90, 30)
        os.utime(model)                                  # "a new model file" (same weights and architecture)
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 20
        while "states kept" not in daemon.log.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "states kept" in daemon.log.read_text()
        for seq in range(30, 60):
            for sid, x in xs.items():
                pub.send(f"sensors/{sid}/reading", f'{{"seq": {seq}, "x": {x[seq].tolist()}}}'.encode())
        assert pub.wait_all(20) and collector.wait_for(180, 30)
        ys, _ = offline(xs)
        for (sid, seq), y in collector.got.items():        # no break in the predictions across the reload
            np.testing.assert_array_equal(y, ys[sid][seq])
        assert daemon.terminate() == 0
    finally:
        broker.stop()


@pytest.mark.integration
def test_tls_with_a_private_ca(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", tls=True).start()
    try:
        daemon = DaemonProcess(tmp_path, broker.url, mqtt_extra=f'tls_ca = "{broker.ca}"').start()
        collector, pub = Collector(broker.port, ca=broker.ca), Publisher(broker.port, ca=broker.ca)
        xs = readings(2, 15, seed=11)
        pub.send_readings(xs)
        assert pub.wait_all(20) and collector.wait_for(30, 30)
        ys, _ = offline(xs)
        for (sid, seq), y in collector.got.items():
            np.testing.assert_array_equal(y, ys[sid][seq])
        assert daemon.terminate() == 0
        text = (tmp_path / "broker" / "mosquitto.log").read_text()
        assert "OpenSSL Error" not in text
    finally:
        broker.stop()


def test_a_subscription_the_broker_refuses_or_downgrades_is_a_warning(caplog):
    """The SUBACK's verdict reaches the log: a refusal (an ACL, on brokers that check it at
    subscribe time) says what to check; QoS 0 instead of 1 says that nothing will be kept or
    redelivered. (Mosquitto can produce neither here: it checks its ACL file at delivery, and with
    max_qos 0 it refuses the connection outright because of the QoS 1 Last Will.) Every daemon
    test's start-up waits for the granted case's "mqtt: subscribed" line."""
    link = MqttLink(MqttConfig(url="mqtt://127.0.0.1:1"), 3, lambda reason: None)
    with caplog.at_level(logging.INFO, logger="edgelstm"):
        for code in (0x87, 0, 1):
            link._on_subscribe(link.client, None, 1, [ReasonCode(PacketTypes.SUBACK, identifier=code)], None)
    refused, downgraded, granted = caplog.records
    assert refused.levelno == logging.WARNING and "refused the subscription to sensors/+/reading (Not authorized)" \
        in refused.message and "check the broker's ACL" in refused.message
    assert downgraded.levelno == logging.WARNING and "with QoS 0 only, not 1" in downgraded.message
    assert granted.levelno == logging.INFO and granted.message == "mqtt: subscribed to sensors/+/reading (QoS 1)"
