"""Home Assistant MQTT discovery without a broker: the configs daemon/homeassistant.py builds (keys,
topics, ids, templates), when Outputs publishes them and their removals, and the config checks."""

import json
import re

import numpy as np
import pytest
from conftest import ROOT
from ha_schema import SAFE_LEVEL, check_documented

import edgelstm
from edgelstm.cli import main
from edgelstm.daemon import config
from edgelstm.daemon.homeassistant import Discovery, safe_id
from edgelstm.daemon.messages import Origin, ReadingMsg
from edgelstm.daemon.outputs import Outputs
from edgelstm.errors import ConfigError
from edgelstm.model.names import OutputNames
from edgelstm.protocol.payload import PredictionFormat, Reading, prediction_json

MODEL = str(ROOT / "edgelstm" / "data" / "activity.elstm")
BASE = edgelstm.load(MODEL)                                       # 3 unnamed outputs
LABELLED = edgelstm.Model(BASE.spec.with_names(OutputNames(labels=("still", "walking", "running"))))
NAMED = edgelstm.Model(BASE.spec.with_names(OutputNames(outputs=("temperature", "rel humidity", "items"),
                                                        units=("°C", "%", ""))))
MODELS = {"unnamed": BASE, "labelled": LABELLED, "named": NAMED}

STREAMS = ["s01", "wrist 1", "wrist.1", "wrist_1", "wrist-1", "Küche", "a" * 120, "ID", "id"]


def discovery_config(**overrides):
    settings = {"model": MODEL, "mqtt.url": "mqtt://broker:1883", "mqtt.client_id": "edge-1",
                "homeassistant.enabled": True, **overrides}
    return config.load(None, settings).validate()


def configs(model, streams=("s01",), cfg=None):
    """{topic: parsed config} of every entity of `streams`."""
    d = Discovery(cfg or discovery_config(), model)
    out = {}
    for stream in streams:
        for topic, payload in d.announce(stream, session=1):
            out[topic] = json.loads(payload)
    return out


@pytest.mark.parametrize("kind", MODELS)
def test_every_key_is_one_home_assistant_documents_and_the_required_ones_are_there(kind):
    found = configs(MODELS[kind], STREAMS)
    assert len(found) == len(STREAMS) * (2 if kind == "labelled" else 3)
    for topic, c in found.items():
        check_documented(topic, c)
        assert c["device"]["manufacturer"] == "edgelstm"
        assert c["device"]["sw_version"] == edgelstm.__version__ == c["origin"]["sw_version"]
        assert c["device"]["model"] == f"model {MODELS[kind].content_hash[:12]}"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["availability_topic"] == "edgelstm/edge-1/status"
        assert c["json_attributes_topic"] == c["state_topic"] == f"sensors/{c['device']['name']}/prediction"
        assert c["default_entity_id"].startswith("sensor.") and re.fullmatch(r"sensor\.[a-z0-9_]+",
                                                                             c["default_entity_id"])


def test_ids_are_unique_across_streams_and_outputs_and_stable():
    found = configs(NAMED, STREAMS)
    unique_ids = [c["unique_id"] for c in found.values()]
    assert len(set(unique_ids)) == len(unique_ids) == len(found) == 3 * len(STREAMS)
    devices = {c["device"]["identifiers"][0] for c in found.values()}
    assert len(devices) == len(STREAMS)                  # one device per stream
    assert configs(NAMED, STREAMS) == found              # the same again: ids do not depend on a run
    other = configs(NAMED, STREAMS, discovery_config(**{"mqtt.client_id": "edge-2"}))
    assert not {c["unique_id"] for c in other.values()} & set(unique_ids)    # another daemon, other ids


def test_unsafe_ids_are_sanitised_with_a_hash_and_safe_ones_kept():
    assert safe_id("s01") == "s01" and safe_id("wrist_1") == "wrist_1"
    spaced, dotted = safe_id("wrist 1"), safe_id("wrist.1")
    assert spaced.startswith("wrist_1_") and dotted.startswith("wrist_1_") and spaced != dotted
    assert SAFE_LEVEL.fullmatch(safe_id("Küche/#+")) and safe_id("Küche") != safe_id("K_che")
    long = safe_id("a" * 120)
    assert len(long) < 64 and long != safe_id("a" * 121)
    assert safe_id("edgelstm+room") != "edgelstm+room"          # a client id may hold what a level may not


def _prediction(model, stream="s01"):
    y = np.array([0.25, 1.5, -0.5], np.float32)
    names = PredictionFormat(model.labels, model.output_names, model.spec.scores) if model.spec.names else None
    return json.loads(prediction_json(stream, 7, 1.0, 2.0, model.content_hash, y, names=names)), y


@pytest.mark.parametrize("kind", MODELS)
def test_templates_pick_each_output_out_of_the_prediction(kind):
    jinja2 = pytest.importorskip("jinja2")
    model = MODELS[kind]
    value_json, y = _prediction(model)
    env = jinja2.Environment()
    found = list(configs(model).values())
    rendered = [env.from_string(c["value_template"]).render(value_json=value_json) for c in found]
    if kind == "labelled":
        assert [c["value_template"] for c in found] == ["{{ value_json.label }}", "{{ value_json.p }}"]
        assert rendered[0] == "walking" and found[0]["options"] == ["still", "walking", "running"]
        assert float(rendered[1]) == pytest.approx(value_json["p"])
    else:
        assert [float(r) for r in rendered] == pytest.approx(y.tolist())
    if kind == "named":
        assert [c["value_template"] for c in found] == ['{{ value_json.temperature }}',
                                                         '{{ value_json["rel humidity"] }}',
                                                         '{{ value_json["items"] }}']     # .items: the dict method
        assert [c.get("unit_of_measurement") for c in found] == ["°C", "%", None]
        assert [c["name"] for c in found] == ["temperature", "rel humidity", "items"]
    if kind == "unnamed":
        assert [c["value_template"] for c in found] == [f"{{{{ value_json.y[{i}] }}}}" for i in range(3)]
    attributes = env.from_string(found[0]["json_attributes_template"]).render(value_json=value_json)
    assert json.loads(attributes) == {"stream": "s01", "model": model.content_hash}


def test_topics_follow_the_config():
    cfg = discovery_config(**{"homeassistant.prefix": "ha/discovery", "mqtt.publish": "out/{client_id}/{stream}",
                              "mqtt.status_topic": "daemons/{client_id}", "mqtt.qos": 0})
    found = configs(BASE, ["s 1"], cfg)
    topic, c = next(iter(found.items()))
    assert topic.startswith("ha/discovery/sensor/edge-1/s_1_")
    assert (c["state_topic"], c["availability_topic"], c["qos"]) == ("out/edge-1/s 1", "daemons/edge-1", 0)


def test_announced_once_per_connection_removed_on_forget_and_on_renames():
    d = Discovery(discovery_config(), BASE)
    first = d.announce("s01", session=1)
    assert len(first) == 3 and d.announce("s01", session=1) == []
    assert d.announce("s01", session=2) == first             # after a reconnect: again (the broker may have lost it)
    assert d.forget("s01") == [(topic, b"") for topic, _ in first]
    assert d.announce("s01", session=2) == first             # back after being forgotten
    removed = d.use_model(NAMED)                              # a reload with output names: y0..y2 go away
    assert sorted(removed) == sorted((topic, b"") for topic, _ in first)
    assert {t for t, _ in d.announce("s01", session=2)}.isdisjoint(t for t, _ in first)


class RecordingLink:
    """An MqttLink's publishing side: (topic, payload, retain) in order."""

    def __init__(self):
        self.sent, self.connects = [], 1

    def publish(self, topic, data, retain=False):
        self.sent.append((topic, data, retain))


def reading(stream, seq=0):
    return ReadingMsg(stream, Reading(seq, np.zeros(3, np.float32)), Origin(None, None, None, False, 0.0))


def test_outputs_announce_before_the_first_prediction_and_remove_on_forget():
    link, counted = RecordingLink(), []
    out = Outputs(discovery_config(), BASE, link, None, lambda reason: None, counted.append)
    out.emit(reading("s01"), 0.0, np.zeros(3, np.float32))
    out.emit(reading("s01", 1), 0.0, np.zeros(3, np.float32))
    topics = [(t, retain) for t, _, retain in link.sent]
    assert [retain for _, retain in topics] == [True] * 3 + [False, False]
    assert topics[3][0] == topics[4][0] == "sensors/s01/prediction"
    out.forget("s01")
    assert link.sent[5:] == [(t, b"", True) for t, _, _ in link.sent[:3]]
    assert counted == ["config"] * 3 + ["removal"] * 3


def test_outputs_without_homeassistant_publish_predictions_only():
    link = RecordingLink()
    cfg = config.load(None, {"model": MODEL, "mqtt.url": "mqtt://broker:1883"}).validate()
    out = Outputs(cfg, BASE, link, None, lambda reason: None)
    out.emit(reading("s01"), 0.0, np.zeros(3, np.float32))
    out.forget("s01")
    assert [(t, retain) for t, _, retain in link.sent] == [("sensors/s01/prediction", False)]


@pytest.mark.parametrize("settings, message", [
    ({"serial.port": "/dev/ttyUSB0"}, "homeassistant.enabled needs predictions published over MQTT"),
    ({"mqtt.url": "mqtt://broker:1883", "output": "stdout"}, "homeassistant.enabled needs predictions published"),
    ({"mqtt.url": "mqtt://broker:1883", "homeassistant.prefix": ""}, "must be Home Assistant's discovery prefix"),
    ({"mqtt.url": "mqtt://broker:1883", "homeassistant.prefix": "ha/"}, "without a leading or trailing '/'"),
    ({"mqtt.url": "mqtt://broker:1883", "homeassistant.prefix": "ha/#"}, "contains a wildcard"),
    ({"mqtt.url": "mqtt://broker:1883", "homeassistant.prefix": "sensors",
      "mqtt.subscribe": "sensors/sensor/+/s1_y0/config"}, "would read them as readings"),
])
def test_config_refuses_discovery_that_cannot_work(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        config.load(None, {"model": MODEL, "homeassistant.enabled": True, **settings}).validate()
    assert "\n" not in str(err.value)


def test_unknown_homeassistant_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown setting homeassistant.'discovery'"):
        config.load(None, {"model": MODEL, "mqtt.url": "mqtt://h", "homeassistant.discovery": True})


def test_check_config_takes_the_homeassistant_flag(capsys):
    assert main(["check-config", "--model", MODEL, "--serial", "/dev/null", "--homeassistant"]) == 1
    assert "homeassistant.enabled needs predictions published over MQTT" in capsys.readouterr().err
    assert main(["check-config", "--model", MODEL, "--mqtt", "mqtt://broker:1883", "--homeassistant"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["homeassistant"] == {"enabled": True, "prefix": "homeassistant"}
