"""Home Assistant's documented MQTT discovery schema for a sensor, as the tests check every
config the daemon builds or publishes against it."""

import re

# The configuration variables of an MQTT sensor, as https://www.home-assistant.io/integrations/sensor.mqtt/
# lists them (source: home-assistant.io, source/_integrations/sensor.mqtt.markdown; `object_id` was replaced by
# `default_entity_id` in Home Assistant 2025.10 and stops working in 2026.4), plus `origin`, which the MQTT
# integration's discovery section documents for every discovery payload
# (https://www.home-assistant.io/integrations/mqtt/#discovery-payload).
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after",
    "force_update", "icon", "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name",
    "options", "payload_available", "payload_not_available", "platform", "suggested_display_precision", "qos",
    "state_class", "state_topic", "unique_id", "unit_of_measurement", "value_template",
    "origin",
}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
               "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
# the documented state classes (developers.home-assistant.io/docs/core/entity/sensor#available-state-classes)
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
SAFE_LEVEL = re.compile(r"[a-zA-Z0-9_-]+")          # a discovery topic's node_id and object_id


def check_documented(topic: str, c: dict, prefix: str = "homeassistant") -> None:
    """Fails unless `c`, published at `topic`, is an MQTT sensor config Home Assistant documents."""
    assert set(c) <= SENSOR_KEYS, set(c) - SENSOR_KEYS
    assert set(c["device"]) <= DEVICE_KEYS and set(c["origin"]) <= ORIGIN_KEYS
    # state_topic is the one key the docs require; a device needs unique_id and an identifier
    for key in ("state_topic", "unique_id", "name", "value_template", "availability_topic", "device"):
        assert c[key], key
    assert c["device"]["identifiers"]
    # options only with device_class enum, never with a unit or state class (Home Assistant refuses it)
    if "options" in c:
        assert c["device_class"] == "enum" and "state_class" not in c and "unit_of_measurement" not in c
    else:
        assert c["state_class"] in STATE_CLASSES
    first, component, node_id, object_id, last = topic.split("/")
    assert (first, component, last) == (prefix, "sensor", "config")
    assert SAFE_LEVEL.fullmatch(node_id) and SAFE_LEVEL.fullmatch(object_id), topic
