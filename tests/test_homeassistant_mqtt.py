"""Home Assistant discovery against a real Mosquitto: `edgelstm run --homeassistant` leaves retained
configs that a late subscriber (Home Assistant starting later) gets, availability follows the
daemon (its Last Will when killed), and forgetting an idle stream clears its configs."""

import json
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from daemon_helpers import MODEL, Collector, DaemonProcess, Publisher, by_label, scrape, stop_client, wait_until
from ha_schema import check_documented

import edgelstm
from edgelstm.model import deploy
from edgelstm.model.names import OutputNames

pytestmark = pytest.mark.integration
LABELS = ("still", "walking", "running")
X = [0.1, -0.2, 0.3]


class Watcher:
    """A fresh subscriber to `topic_filter`, recording (topic, payload, retained) in arrival order."""

    def __init__(self, port: int, topic_filter: str):
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda client, *a: client.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), f"could not subscribe to {topic_filter}"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))

    def wait_for(self, condition, timeout: float = 15.0) -> bool:
        """condition(list of (topic, payload, retained)) holds within `timeout`."""
        return wait_until(lambda: condition(self.got), timeout, self.lock)

    def retained_now(self, marker_topic: str) -> list[tuple[str, bytes, bool]]:
        """What was retained for the filter when it was subscribed: the broker sends that first, so
        everything before a marker published after the subscription (and matched by it)."""
        self.client.publish(marker_topic, b"marker", qos=1)
        assert self.wait_for(lambda got: any(t == marker_topic for t, _, _ in got)), "marker not delivered"
        with self.lock:
            return self.got[:[t for t, _, _ in self.got].index(marker_topic)]

    def stop(self):
        stop_client(self.client)


def labelled_model(tmp_path):
    path = tmp_path / "labelled.elstm"
    deploy.save(edgelstm.load(MODEL).spec.with_names(OutputNames(labels=LABELS)), path)
    return path


def send_one(broker, stream: str) -> None:
    """One reading of `stream`, and wait for its prediction."""
    collector, publisher = Collector(broker.port), Publisher(broker.port)
    try:
        publisher.send(f"sensors/{stream}/reading", json.dumps({"seq": 0, "x": X}).encode())
        assert wait_until(lambda: (stream, 0) in collector.got, 30, collector.lock), "no prediction"
    finally:
        collector.stop()
        publisher.stop()


def test_first_reading_leaves_retained_configs_and_availability_follows_the_daemon(tmp_path, broker):
    daemon = DaemonProcess(tmp_path, broker.url, args=("--homeassistant",))
    daemon.config.write_text(daemon.config.read_text().replace(f'model = "{MODEL}"',
                                                               f'model = "{labelled_model(tmp_path)}"'))
    status_topic = f"edgelstm/{daemon.client_id}/status"
    daemon.start()
    early = Watcher(broker.port, "homeassistant/#")
    assert early.retained_now("homeassistant/marker") == []      # nothing before a stream is seen
    send_one(broker, "wrist 1")                                  # configs go out before the first prediction

    late = Watcher(broker.port, "homeassistant/sensor/#")        # Home Assistant starting later
    retained = late.retained_now("homeassistant/sensor/marker/x/config")
    assert len(retained) == 2 and all(is_retained for _, _, is_retained in retained)
    configs = {topic: json.loads(payload) for topic, payload, _ in retained}
    for topic, c in configs.items():                            # what the broker holds, as documented
        check_documented(topic, c)
    node = daemon.client_id
    by_key = {topic.rsplit("/", 2)[1].rsplit("_", 1)[1]: c for topic, c in configs.items()}
    assert all(topic.startswith(f"homeassistant/sensor/{node}/wrist_1_") for topic in configs)
    label, p = by_key["label"], by_key["p"]
    assert label["options"] == list(LABELS) and label["value_template"] == "{{ value_json.label }}"
    assert p["value_template"] == "{{ value_json.p }}" and p["state_class"] == "measurement"
    for c in (label, p):
        assert c["state_topic"] == c["json_attributes_topic"] == "sensors/wrist 1/prediction"
        assert c["availability_topic"] == status_topic and c["device"]["name"] == "wrist 1"
    assert label["device"] == p["device"] and label["unique_id"] != p["unique_id"]

    status = Watcher(broker.port, status_topic)
    assert status.wait_for(lambda got: got and got[0][1:] == (b"online", True)), status.got
    m = scrape(daemon)
    assert by_label(m, "edgelstm_discovery_messages_total", "kind") == {"config": 2}

    daemon.kill()                                                # SIGKILL: no goodbye, the Last Will speaks
    assert status.wait_for(lambda got: any(payload == b"offline" for _, payload, _ in got)), status.got
    after = Watcher(broker.port, "homeassistant/sensor/#")
    assert len(after.retained_now("homeassistant/sensor/marker/y/config")) == 2   # entities stay, unavailable
    for w in (early, late, status, after):
        w.stop()


def test_forgetting_an_idle_stream_clears_its_retained_configs(tmp_path, broker):
    daemon = DaemonProcess(tmp_path, broker.url, extra="[policy]\nstream_ttl_s = 1.0\n", args=("--homeassistant",))
    daemon.start()
    watcher = Watcher(broker.port, "homeassistant/sensor/#")
    send_one(broker, "s01")
    assert watcher.wait_for(lambda got: len(got) >= 3)
    topics = [topic for topic, _, _ in watcher.got[:3]]
    assert all(json.loads(payload)["state_topic"] == "sensors/s01/prediction" for _, payload, _ in watcher.got[:3])

    # idle past stream_ttl_s: forgotten, and each config topic gets an empty retained message
    assert watcher.wait_for(lambda got: sorted(t for t, payload, _ in got if payload == b"") == sorted(topics)), \
        watcher.got
    late = Watcher(broker.port, "homeassistant/sensor/#")
    assert late.retained_now("homeassistant/sensor/marker/x/config") == []
    m = scrape(daemon)
    assert by_label(m, "edgelstm_discovery_messages_total", "kind") == {"config": 3, "removal": 3}
    assert by_label(m, "edgelstm_drops_total")["evicted_idle"] == 1
    assert daemon.terminate() == 0
    watcher.stop()
    late.stop()
