"""Home Assistant MQTT discovery: the retained messages that make each stream a device in Home
Assistant with one sensor entity per model output, and the empty ones that remove them again.

Pure: (topic, payload) pairs from the config, the model's names and a stream id, and which
streams were announced; daemon/outputs.py publishes them. The schema is Home Assistant's:
  keys     https://www.home-assistant.io/integrations/sensor.mqtt/ (configuration variables)
  topics   https://www.home-assistant.io/integrations/mqtt/#discovery-topic
           <prefix>/sensor/<node_id>/<object_id>/config, both ids of [a-zA-Z0-9_-]; a retained
           empty payload removes the entity.

What was decided, and why:
  * When: a stream is announced with its first prediction in this daemon's run. A stream restored
    from a checkpoint too, at its first prediction after the restart: its configs from the last run
    are still retained at the broker meanwhile, while announcing every restored stream at start-up
    would queue capacity x outputs messages before the broker is even connected. Announced again
    after every (re)connect (a broker without persistence forgets retained messages) and after a
    model reload (a new hash for the device, maybe other names).
  * Removed when the daemon forgets the stream (stream_ttl_s, or its row taken at capacity), whether
    or not this run announced it: a restored stream that never spoke again leaves nothing behind.
  * One Home Assistant device per stream, as Zigbee2MQTT and Frigate do: a stream is one sensor
    board, its device page groups the outputs, and removing the stream removes the device.
  * Entities: a labelled model's class (an enum sensor over its labels) and the class's probability
    p; a named output each (with its unit); else y[0], y[1], ... The state is read from the stream's
    prediction topic with a value_template; the attributes keep only the fields that do not change
    with every prediction (Home Assistant warns that others cost a state write per message).
  * Availability: the daemon's status topic (retained "online", Last Will "offline").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Protocol

from .. import __version__
from .config import DaemonConfig

COMPONENT = "sensor"
UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")      # outside what a discovery topic's node_id and object_id may hold
MAX_READABLE = 48                           # characters of an id kept readable before its hash suffix
ONLINE, OFFLINE = "online", "offline"       # what mqtt_link publishes on the status topic
# the entity's attributes: only the prediction's fields that stay the same from one to the next
ATTRIBUTES_TEMPLATE = "{{ {'stream': value_json.stream, 'model': value_json.model} | tojson }}"

DiscoveryMessage = tuple[str, bytes]        # (topic, payload)


class NamedModel(Protocol):
    """What discovery needs of a model (engine.Model has it)."""

    labels: tuple[str, ...]
    output_names: tuple[str, ...]
    output_units: tuple[str, ...]
    output_size: int
    content_hash: str


def safe_id(text: str) -> str:
    """`text` as a discovery topic level: itself when it already is one (and short), else its safe
    characters (others become '_', at most MAX_READABLE of them) and 8 hex digits of its hash, so
    that ids which differ stay apart ("a b" and "a.b" are "a_b_4f5a...", "a_b_0c1d...")."""
    readable = UNSAFE.sub("_", text)
    if readable == text and len(text) <= MAX_READABLE:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable[:MAX_READABLE]}_{digest}"


@dataclass(frozen=True)
class Entity:
    """One sensor entity of a stream's device: one value out of its prediction payload."""

    key: str                        # ends the object_id and unique_id: safe, distinct within a model
    name: str                       # shown after the device's name
    value_template: str             # picks the value out of the prediction JSON (protocol/payload.py)
    unit: str = ""
    options: tuple[str, ...] = ()   # an enum sensor's states (the labels); empty: a numeric sensor


def _json_field(name: str) -> str:
    """A template reading `name` from value_json: value_json.name where that means the field, else
    value_json["name"] (a name with spaces or dots, or one that is a dict method, as 'items')."""
    if name.isidentifier() and name.isascii() and not hasattr(dict, name):
        return f"{{{{ value_json.{name} }}}}"
    return f"{{{{ value_json[{json.dumps(name)}] }}}}"


def entities(model: NamedModel) -> list[Entity]:
    """The entities every stream of `model` gets, in output order."""
    if model.labels:
        return [Entity("label", "Class", _json_field("label"), options=model.labels),
                Entity("p", "Class probability", _json_field("p"))]
    if model.output_names:
        return [Entity(safe_id(name), name, _json_field(name), unit)
                for name, unit in zip(model.output_names, model.output_units)]
    return [Entity(f"y{i}", f"y[{i}]", f"{{{{ value_json.y[{i}] }}}}") for i in range(model.output_size)]


class Discovery:
    """The discovery messages of one daemon, and which streams it has announced since the last
    (re)connect or model change."""

    def __init__(self, cfg: DaemonConfig, model: NamedModel):
        m = cfg.mqtt
        self.prefix = cfg.homeassistant.prefix
        self.node_id = safe_id(m.client_id)
        self._publish = m.publish
        self._client_id = m.client_id
        self._status_topic = m.status_topic.format(client_id=m.client_id)
        self._qos = m.qos
        self.announced: set[str] = set()
        self.session = 0                    # the broker connection the announcements were made on
        self.use_model(model)

    def use_model(self, model: NamedModel) -> list[DiscoveryMessage]:
        """Describe streams as `model`'s from now on; every stream is announced again with its next
        prediction. Returns the removals of the entities that `model` no longer has (other names)."""
        old = {s: self._config_topics(s) for s in self.announced} if self.announced else {}
        self.model_hash = model.content_hash
        self.entities = entities(model)
        self.announced.clear()
        return [(topic, b"") for s, topics in old.items() for topic in topics - self._config_topics(s)]

    def announce(self, stream: str, session: int) -> list[DiscoveryMessage]:
        """The configs of `stream`'s entities if it was not announced on this broker connection
        (`session`, counting connects), else nothing."""
        if session != self.session:
            self.session = session
            self.announced.clear()
        if stream in self.announced:
            return []
        self.announced.add(stream)
        return self.configs(stream)

    def forget(self, stream: str) -> list[DiscoveryMessage]:
        """The removals of `stream`'s entities (the daemon forgot it)."""
        self.announced.discard(stream)
        return [(self.config_topic(stream, e), b"") for e in self.entities]

    def config_topic(self, stream: str, entity: Entity) -> str:
        return f"{self.prefix}/{COMPONENT}/{self.node_id}/{self._object_id(stream, entity)}/config"

    def _config_topics(self, stream: str) -> set[str]:
        return {self.config_topic(stream, e) for e in self.entities}

    def _object_id(self, stream: str, entity: Entity) -> str:
        return f"{safe_id(stream)}_{entity.key}"

    def configs(self, stream: str) -> list[DiscoveryMessage]:
        """(config topic, JSON config) for each entity of `stream`, in output order."""
        return [(self.config_topic(stream, e), json.dumps(self.config(stream, e)).encode()) for e in self.entities]

    def config(self, stream: str, entity: Entity) -> dict:
        """The discovery config of one entity, as Home Assistant's MQTT sensor documents it."""
        state_topic = self._publish.format(stream=stream, client_id=self._client_id)
        object_id = self._object_id(stream, entity)
        config: dict = {
            "name": entity.name,
            "unique_id": f"edgelstm_{self.node_id}_{object_id}",
            # sensor.<id> (the documented form; without the domain Home Assistant makes up a name),
            # only a suggestion: taken when the entity is first added, numbered if in use
            "default_entity_id": f"{COMPONENT}.edgelstm_{object_id}".lower().replace("-", "_"),
            "state_topic": state_topic,
            "value_template": entity.value_template,
            "json_attributes_topic": state_topic,
            "json_attributes_template": ATTRIBUTES_TEMPLATE,
            "availability_topic": self._status_topic,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "qos": self._qos,                   # what predictions are published with
            "device": self._device(stream),
            "origin": {"name": "edgelstm", "sw_version": __version__},
        }
        if entity.options:
            config["device_class"] = "enum"     # Home Assistant refuses options with a unit or state_class
            config["options"] = list(entity.options)
        else:
            config["state_class"] = "measurement"
            if entity.unit:
                config["unit_of_measurement"] = entity.unit
        return config

    def _device(self, stream: str) -> dict:
        return {"identifiers": [f"edgelstm_{self.node_id}_{safe_id(stream)}"], "name": stream,
                "manufacturer": "edgelstm", "model": f"model {self.model_hash[:12]}", "sw_version": __version__}
