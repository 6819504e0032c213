"""Wire formats: the serial frame protocol (firmware_bridge/PROTOCOL.md) and MQTT payloads."""
