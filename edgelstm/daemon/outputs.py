"""Where a prediction goes: an MQTT topic, stdout or a callable (embedding, the demo), and back
to the link the reading came from when that link answers there (serial.reply). With
[homeassistant] on, a stream's discovery configs go out before its first prediction, and their
removals when the daemon forgets it (daemon/homeassistant.py)."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from ..engine import Model
from ..protocol.payload import PredictionFormat, prediction_json
from ..transports.mqtt_link import MqttLink
from .config import DaemonConfig
from .homeassistant import Discovery, DiscoveryMessage
from .messages import ReadingMsg

# stream, seq, t_in, y, replay
Sink = Callable[[str, int, float, np.ndarray, bool], None]


class Outputs:
    def __init__(self, cfg: DaemonConfig, model: Model, mqtt: MqttLink | None, sink: Sink | None,
                 count: Callable[[str], None], count_discovery: Callable[[str], None] = lambda kind: None):
        self._mqtt = mqtt if cfg.output_kind == "mqtt" else None
        self._sink = sink
        self._count = count
        self._count_discovery = count_discovery     # edgelstm_discovery_messages_total{kind}
        self._reply = cfg.serial.reply
        self._topic = cfg.mqtt.publish
        self._client_id = cfg.mqtt.client_id
        announces = cfg.homeassistant.enabled and self._mqtt is not None and sink is None
        self._discovery = Discovery(cfg, model) if announces else None
        self.use_model(model)

    def use_model(self, model: Model) -> None:
        """Publish as `model`'s predictions (at start and after a reload): its hash and its names."""
        self.model_hash = model.content_hash
        self.names = PredictionFormat(model.labels, model.output_names, model.spec.scores) \
            if model.spec.names else None
        if self._discovery is not None and self._mqtt is not None:
            self._announce(self._mqtt, self._discovery.use_model(model), "removal")

    def forget(self, stream: str) -> None:
        """The daemon forgot `stream`: Home Assistant forgets its entities too."""
        if self._discovery is not None and self._mqtt is not None:
            self._announce(self._mqtt, self._discovery.forget(stream), "removal")

    def _announce(self, mqtt: MqttLink, messages: list[DiscoveryMessage], kind: str) -> None:
        """Discovery messages, retained (QoS 1), in order: ahead of the predictions that follow."""
        for topic, payload in messages:
            mqtt.publish(topic, payload, retain=True)
            self._count_discovery(kind)

    def emit(self, msg: ReadingMsg, t_in: float, y: np.ndarray, replay: bool = False) -> None:
        seq = msg.reading.seq
        if self._reply and msg.origin.reply_to is not None and not msg.origin.link.reply(msg.origin, seq, y):
            self._count("serial_reply")
        if self._sink is not None:
            self._sink(msg.stream, seq, t_in, y, replay)
            return
        data = prediction_json(msg.stream, seq, t_in, time.time(), self.model_hash, y, replay=replay,
                               names=self.names)
        if self._mqtt is not None:
            if self._discovery is not None:
                self._announce(self._mqtt, self._discovery.announce(msg.stream, self._mqtt.connects), "config")
            self._mqtt.publish(self._topic.format(stream=msg.stream, client_id=self._client_id), data)
        else:
            os.write(1, data + b"\n")

    def published(self) -> int:
        """Predictions handed to the broker so far (the ledger's window mark)."""
        return self._mqtt.publications.count if self._mqtt is not None else 0

    def congested(self) -> bool:
        """The broker takes predictions more slowly than they come: hold step-mode acks."""
        return self._mqtt is not None and self._mqtt.congested()

    def confirmed(self, mark: int) -> bool:
        """The broker confirmed (or we gave up on) every prediction numbered below mark."""
        return self._mqtt is None or self._mqtt.publications.settled_before(mark)
