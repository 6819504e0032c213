"""The commit protocol alone: when readings are acknowledged and state is written."""

import numpy as np

from edgelstm.daemon import checkpoint
from edgelstm.daemon.ledger import Ledger
from edgelstm.daemon.messages import Origin
from edgelstm.daemon.snapshots import Delta


class Link:
    name = "memory"

    def __init__(self):
        self.acked = []

    def ack(self, origin):
        self.acked.append(origin.ack_id)


class Broker:
    """What the ledger asks of the outputs: predictions handed out, and which are confirmed."""

    def __init__(self):
        self.published_n = 0
        self.confirmed_n = 0
        self.waiting = False

    def published(self):
        return self.published_n

    def confirmed(self, mark):
        return self.confirmed_n >= mark

    def congested(self):
        return self.waiting


def snapshot():
    ckpt = checkpoint.Checkpoint.of("h", 2, [{"id": "a", "last_seq": 1, "boot": None, "last_t": None}],
                                    np.zeros((1, 2), np.float32))
    return Delta(ckpt.model_hash, ckpt.state_size, ckpt.ids, ckpt.positions, ckpt.states, 0.0, 0.0, full=True)


def origins(link, ids):
    return [Origin(link, i, None, False, 0.0) for i in ids]


def make(tmp_path, mode="checkpoint", path="state.ckpt"):
    failures = []
    ledger = Ledger(mode, str(tmp_path / path) if path else "", 0.1, checkpoint.save, lambda: failures.append(1))
    return ledger, failures


def test_acks_wait_for_the_broker_and_the_checkpoint_and_keep_arrival_order(tmp_path):
    ledger, _ = make(tmp_path)
    link, broker = Link(), Broker()
    for o in origins(link, [5, 3, 9]):
        ledger.handled(o)
    broker.published_n = 3
    ledger.tick(1.0, snapshot, broker)                  # the window closes, predictions unconfirmed
    assert link.acked == [] and not (tmp_path / "state.ckpt").exists()
    broker.confirmed_n = 3
    ledger.tick(1.01, snapshot, broker)                 # confirmed: the write starts on its thread
    ledger.finish_write()
    ledger.tick(1.02, snapshot, broker)                 # written: the acks go out
    assert link.acked == [5, 3, 9] and checkpoint.load(str(tmp_path / "state.ckpt")).streams[0]["id"] == "a"


def test_a_failed_write_holds_the_acks_and_is_retried(tmp_path):
    ledger, failures = make(tmp_path, path="missing-dir/state.ckpt")
    link, broker = Link(), Broker()
    ledger.handled(origins(link, [1])[0])
    ledger.tick(1.0, snapshot, broker)                  # the write starts ...
    ledger.finish_write()
    ledger.tick(1.1, snapshot, broker)                  # ... and failed
    ledger.tick(1.5, snapshot, broker)                  # within the retry delay: no second try
    assert failures == [1] and link.acked == []
    (tmp_path / "missing-dir").mkdir()
    ledger.tick(2.2, snapshot, broker)
    ledger.finish_write()
    ledger.tick(2.3, snapshot, broker)
    assert link.acked == [1] and [p.name for p in (tmp_path / "missing-dir").iterdir()] == ["state.ckpt"]


def test_step_mode_acks_at_once_unless_predictions_wait_for_the_broker(tmp_path):
    ledger, _ = make(tmp_path, mode="step", path="")
    link, broker = Link(), Broker()
    ledger.handled(origins(link, [1])[0])
    broker.waiting = True
    ledger.tick(1.0, snapshot, broker)
    assert link.acked == []
    broker.waiting = False
    ledger.tick(1.1, snapshot, broker)
    assert link.acked == [1]


def test_step_mode_writes_the_checkpoint_aside_and_again_after_a_failure(tmp_path):
    ledger, failures = make(tmp_path, mode="step", path="missing-dir/state.ckpt")
    broker = Broker()
    ledger.changed()
    ledger.tick(1.0, snapshot, broker)
    ledger.finish_write()
    ledger.tick(1.1, snapshot, broker)
    assert failures == [1] and ledger.dirty             # still to be written
    (tmp_path / "missing-dir").mkdir()
    ledger.tick(2.2, snapshot, broker)
    ledger.finish_write()
    ledger.tick(2.3, snapshot, broker)
    assert not ledger.dirty and (tmp_path / "missing-dir" / "state.ckpt").exists()


def test_shutdown_commits_every_open_window_once(tmp_path):
    ledger, _ = make(tmp_path)
    link, broker = Link(), Broker()
    ledger.handled(origins(link, [1])[0])
    broker.published_n = 1
    ledger.tick(1.0, snapshot, broker)                  # window 1 closing
    ledger.handled(origins(link, [2])[0])               # window 2 open
    assert not ledger.commit_all(snapshot(), confirmed=False) and link.acked == []
    ledger.handled(origins(link, [3])[0])
    assert ledger.commit_all(snapshot(), confirmed=True) and link.acked == [3]


def delta(ids, seq, full=False, removed=()):
    positions = np.array([(seq, -1, np.nan, 0.0)] * len(ids), checkpoint.POSITION)
    return Delta("h", 2, list(ids), positions, np.full((len(ids), 2), seq, np.float32), 0.0, 0.0, list(removed), full)


def test_the_file_holds_every_delta_even_one_whose_window_never_confirmed(tmp_path):
    """Written checkpoints are the image the deltas add up to; at shutdown the open window's
    delta goes in before the last one, though it was never written on its own."""
    ledger, _ = make(tmp_path)
    link, broker = Link(), Broker()
    ledger.handled(origins(link, [1])[0])
    broker.published_n = broker.confirmed_n = 1
    ledger.tick(1.0, lambda: delta(["a", "b"], 1, full=True), broker)      # window 1: closes ...
    ledger.tick(1.01, lambda: delta([], 0), broker)                        # ... written
    ledger.finish_write()
    ledger.tick(1.02, lambda: delta([], 0), broker)
    assert checkpoint.load(str(tmp_path / "state.ckpt")).ids == ["a", "b"]
    ledger.handled(origins(link, [2])[0])
    broker.published_n = 2                                                 # not confirmed
    ledger.tick(1.2, lambda: delta(["b", "c"], 2, removed=["a"]), broker)  # window 2 closing, unwritten
    assert ledger.commit_all(delta(["d"], 3), confirmed=True)
    ckpt = checkpoint.load(str(tmp_path / "state.ckpt"))
    assert sorted(ckpt.ids) == ["b", "c", "d"]
    assert {s["id"]: s["last_seq"] for s in ckpt.streams} == {"b": 2, "c": 2, "d": 3}
