"""The floor for bench_e2e: a do-nothing MQTT relay built like the daemon, without the daemon.

    python benchmarks/paho_relay.py PORT IN_FILTER OUT_PATTERN

paho's network thread decodes and enqueues each reading; a worker thread publishes an answer
of the daemon's shape (QoS 1) to OUT_PATTERN.format(stream=...), and acknowledges the reading
after that. No model, no state, no checkpoint: whatever latency this shows on a machine, any
Python service built on paho pays there too. Prints "ready" once subscribed.
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
    prefix, _, suffix = in_filter.partition("+")
    inbox: queue.Queue = queue.Queue(maxsize=10_000)
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"relay-{port}-{prefix}", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_socket_open = no_nagle
    c.max_inflight_messages_set(100)
    c.on_connect = lambda client, *a: client.subscribe(in_filter, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda client, userdata, msg: inbox.put(msg)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 65_535
    c.connect("127.0.0.1", port, properties=props)
    c.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    while True:
        msg = inbox.get()
        reading = json.loads(msg.payload)
        stream = msg.topic[len(prefix):len(msg.topic) - len(suffix)]
        answer = {"stream": stream, "seq": reading["seq"], "t_in": reading["t"], "t_out": time.time(),
                  "model": "relay", "y": reading["x"]}
        c.publish(out_pattern.format(stream=stream), json.dumps(answer, separators=(",", ":")), qos=1)
        c.ack(msg.mid, msg.qos)


if __name__ == "__main__":
    main()
