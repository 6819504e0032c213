"""Stream ids from MQTT topics, for plain and shared ($share/GROUP/filter) subscriptions; no broker."""

import json

import pytest
from paho.mqtt.client import MQTTMessage

from edgelstm.daemon.config import MqttConfig
from edgelstm.daemon.messages import ReadingMsg, RejectedMsg
from edgelstm.errors import Rejected
from edgelstm.protocol.topics import StreamTopics, split_share, subscription_matches
from edgelstm.transports.mqtt_link import MqttLink

SUBSCRIPTIONS = ["sensors/+/reading", "$share/g1/sensors/+/reading"]


def test_split_share():
    assert split_share("$share/g1/sensors/+/reading") == ("g1", "sensors/+/reading")
    assert split_share("sensors/+/reading") == (None, "sensors/+/reading")
    assert split_share("$SYS/+/x") == (None, "$SYS/+/x")


@pytest.mark.parametrize("subscription", SUBSCRIPTIONS)
def test_the_plus_level_names_the_stream(subscription):
    topics = StreamTopics(subscription)
    assert topics.stream_of("sensors/wrist1/reading") == "wrist1"
    assert subscription_matches(subscription, "sensors/wrist1/reading")
    for topic in ["sensors/wrist1/other", "other/wrist1/reading", "sensors//reading",
                  "$share/g1/sensors/wrist1/reading"]:
        with pytest.raises(Rejected) as info:
            topics.stream_of(topic)
        assert info.value.reason == "topic"


@pytest.mark.parametrize("subscription", SUBSCRIPTIONS)
def test_the_mqtt_link_names_the_stream_of_each_delivered_topic(subscription):
    link = MqttLink(MqttConfig(url="mqtt://127.0.0.1:1", subscribe=subscription), n_inputs=3, count=lambda _: None)
    for mid, topic in enumerate([b"sensors/wrist1/reading", b"elsewhere/wrist1/reading"], start=1):
        msg = MQTTMessage(mid=mid, topic=topic)
        msg.payload, msg.qos = json.dumps({"seq": 0, "x": [0.0, 1.0, 2.0]}).encode(), 1
        link.client.on_message(link.client, None, msg)
    good, bad = link.read(0.0, 10)
    assert isinstance(good, ReadingMsg) and good.stream == "wrist1" and good.origin.ack_id == 1
    assert isinstance(bad, RejectedMsg) and bad.reason == "topic"
