"""MQTT topics as the daemon reads them: an input filter whose one '+' level names the stream,
optionally a shared subscription, "$share/GROUP/filter" (MQTT 5: the broker hands each message
to one subscriber of the group).

A shared subscription's prefix is never part of the topics it delivers, so every match, and the
search for the stream's level, is made against the filter after the prefix.
"""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub

from ..errors import Rejected

SHARE_PREFIX = "$share/"


def split_share(subscription: str) -> tuple[str | None, str]:
    """(group, filter) of "$share/GROUP/filter"; (None, subscription) for a plain filter."""
    if not subscription.startswith(SHARE_PREFIX):
        return None, subscription
    group, _, topic_filter = subscription[len(SHARE_PREFIX):].partition("/")
    return group, topic_filter


def subscription_matches(subscription: str, topic: str) -> bool:
    """The broker would deliver `topic` to `subscription` (shared or not)."""
    return topic_matches_sub(split_share(subscription)[1], topic)


class StreamTopics:
    """Finds the stream in the topic of a message delivered to `subscription`: the text at its
    '+' level (config validation makes sure the filter has exactly one)."""

    def __init__(self, subscription: str):
        self.subscription = subscription
        self._prefix, _, self._suffix = split_share(subscription)[1].partition("+")

    def stream_of(self, topic: str) -> str:
        prefix, suffix = self._prefix, self._suffix
        if topic.startswith(prefix) and topic.endswith(suffix) and len(topic) > len(prefix) + len(suffix):
            return topic[len(prefix):len(topic) - len(suffix)]
        raise Rejected("topic", f"{topic[:80]!r} does not match {self.subscription!r}")
