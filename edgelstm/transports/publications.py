"""Predictions handed to the broker and which of them it has confirmed, numbered in order:
the ledger's commit windows wait on these numbers (daemon/ledger.py)."""

from __future__ import annotations

import collections


class Publications:
    """Predictions handed out, numbered 0, 1, 2... in order, and which the broker has not
    confirmed yet. A dropped or QoS 0 prediction is settled at once: nothing will confirm it."""

    def __init__(self) -> None:
        self.count = 0
        self._unsettled: collections.OrderedDict[int, None] = collections.OrderedDict()   # token, oldest first
        self._token_of_mid: dict[int, int] = {}

    def issue(self) -> int:
        token = self.count
        self.count += 1
        self._unsettled[token] = None
        return token

    def sent(self, token: int, mid: int) -> None:
        self._token_of_mid[mid] = token

    def settle(self, token: int) -> None:
        self._unsettled.pop(token, None)

    def confirmed_mid(self, mid: int) -> None:
        token = self._token_of_mid.pop(mid, None)
        if token is not None:
            self.settle(token)

    def settled_before(self, mark: int) -> bool:
        """Every prediction numbered below `mark` is settled."""
        return not self._unsettled or next(iter(self._unsettled)) >= mark

    def __len__(self) -> int:
        return len(self._unsettled)
