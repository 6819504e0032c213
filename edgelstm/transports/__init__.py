"""The links the daemon reads readings from and answers on: MQTT and serial (see base.Link)."""
