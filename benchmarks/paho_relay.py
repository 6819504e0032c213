"""Floors for bench_e2e: do-nothing MQTT relays built on paho, without the daemon.

    python benchmarks/paho_relay.py PORT IN_FILTER OUT_PATTERN [--single-thread]

Each reading is answered with an answer of the daemon's shape (QoS 1) on
OUT_PATTERN.format(stream=...), and acknowledged after that. No model, no state, no checkpoint.

  default          built like the daemon: paho's network thread decodes and enqueues; a worker
                   thread answers. The floor for any Python service with that threading (the
                   one the daemon's design asks for: I/O threads only hand off).
  --single-thread  answers inside paho's on_message, on the network thread: no hand-off between
                   threads at all, the floor for any Python service built on paho.

Prints "ready" once subscribed.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgelstm.transports.mqtt_link import no_nagle


def main() -> None:
    port, in_filter, out_pattern = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    single_thread = "--single-thread" in sys.argv[4:]
    prefix, _, suffix = in_filter.partition("+")
    inbox: queue.Queue = queue.Queue(maxsize=10_000)
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"relay-{port}-{prefix}", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_socket_open = no_nagle
    c.max_inflight_messages_set(100)

    def answer(msg) -> None:
        reading = json.loads(msg.payload)
        stream = msg.topic[len(prefix):len(msg.topic) - len(suffix)]
        out = {"stream": stream, "seq": reading["seq"], "t_in": reading["t"], "t_out": time.time(),
               "model": "relay", "y": reading["x"]}
        c.publish(out_pattern.format(stream=stream), json.dumps(out, separators=(",", ":")), qos=1)
        c.ack(msg.mid, msg.qos)

    def on_subscribe(*args) -> None:
        if not subscribed.is_set():
            subscribed.set()
            print("ready", flush=True)

    c.on_connect = lambda client, *a: client.subscribe(in_filter, qos=1)
    c.on_subscribe = on_subscribe
    c.on_message = (lambda client, userdata, msg: answer(msg)) if single_thread else \
        (lambda client, userdata, msg: inbox.put(msg))
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 65_535
    c.connect("127.0.0.1", port, properties=props)
    if single_thread:
        c.loop_forever()
    else:
        c.loop_start()
        while True:
            answer(inbox.get())


if __name__ == "__main__":
    main()
