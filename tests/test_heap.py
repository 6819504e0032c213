"""The daemon's garbage-collector policy (daemon/heap.py): long-lived objects frozen on a timer,
young garbage collected before, and a full collection now and then."""

import gc
import weakref

from edgelstm.daemon import heap


class Cycle:
    def __init__(self):
        self.me = self


def garbage_cycle() -> weakref.ref:
    return weakref.ref(Cycle())


def test_a_tick_freezes_what_lived_and_collects_young_cycles_first():
    gc.unfreeze()
    keeper = heap.HeapKeeper(0.0)
    keeper.tick(heap.FREEZE_EVERY_S - 1)              # not yet
    frozen_before = gc.get_freeze_count()
    kept = [[i] for i in range(1000)]                 # alive: frozen by the tick
    young = garbage_cycle()
    assert young() is not None
    keeper.tick(heap.FREEZE_EVERY_S)
    try:
        assert young() is None                        # collected, not frozen
        assert gc.get_freeze_count() >= frozen_before + len(kept)
    finally:
        gc.unfreeze()


def test_a_full_collection_comes_round_and_reaches_frozen_cycles():
    gc.unfreeze()
    keeper = heap.HeapKeeper(0.0)
    old = garbage_cycle()
    gc.freeze()                                       # a garbage cycle frozen with the rest
    keeper.tick(heap.FREEZE_EVERY_S)
    assert old() is not None                          # a freeze tick does not reach it ...
    keeper.tick(heap.FULL_EVERY_S)
    try:
        assert old() is None                          # ... the full collection does
    finally:
        gc.unfreeze()
