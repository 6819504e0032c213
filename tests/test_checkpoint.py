"""The checkpoint file and the atomic write under it: round trip, content validation behind a valid checksum,
recency selection, the one-daemon lock (across real processes), and writes that fail for real."""

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT
from specs import random_spec

from edgelstm.daemon import checkpoint
from edgelstm.daemon.checkpoint import Checkpoint, CheckpointError
from edgelstm.errors import CheckpointError as ErrorsCheckpointError
from edgelstm.errors import EdgeLSTMError
from edgelstm.fileio import atomic_write
from edgelstm.model import deploy

S = 3                                   # state size of the hand-built files


def streams(n, seen=None):
    out = [{"id": f"s{i}", "last_seq": i, "boot": 7, "last_t": 1000.5 + i} for i in range(n)]
    for s, t in zip(out, seen or []):
        if t is not None:
            s["seen"] = t
    return out


def states(n, size=S):
    return np.arange(n * size, dtype=np.float32).reshape(n, size) / 7


def sign(header, raw: bytes, version: int = 1, header_len: int | None = None) -> bytes:
    """A version-1 checkpoint file (positions in the header) of `header` (a dict dumped as JSON, or bytes as they
    are) and the states section `raw`, with a correct SHA-256, so that load() has to judge the content itself."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(text) if header_len is None else header_len
    body = checkpoint.MAGIC + struct.pack("<II", version, n) + text + raw
    return body + hashlib.sha256(body).digest()


def good_header():
    return {"model_hash": "abc", "state_size": S, "streams": streams(2, seen=[5.0, None]), "saved_at": 1.0}


def temps(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".tmp"))


def run_python(code: str, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# --- round trip ----------------------------------------------------------------------------------------------


def test_round_trip_keeps_seen_and_writes_a_private_file(tmp_path):
    path = str(tmp_path / "s.ckpt")
    ck = Checkpoint.of("abc", S, streams(3, seen=[10.25, None, 3.0]), states(3))
    checkpoint.save(path, ck)
    back = checkpoint.load(path)
    assert back.model_hash == "abc" and back.state_size == S
    assert back.streams == ck.streams and back.streams[0]["seen"] == 10.25 and "seen" not in back.streams[1]
    assert back.states.dtype == np.float32 and np.array_equal(back.states, ck.states)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["s.ckpt"]


def test_empty_checkpoint_round_trips(tmp_path):
    path = str(tmp_path / "s.ckpt")
    checkpoint.save(path, Checkpoint.of("abc", S, [], np.zeros((0, S), np.float32)))
    back = checkpoint.load(path)
    assert back.streams == [] and back.states.shape == (0, S)


def test_checkpoint_error_is_the_library_error():
    assert checkpoint.CheckpointError is ErrorsCheckpointError
    assert issubclass(CheckpointError, EdgeLSTMError) and issubclass(CheckpointError, ValueError)


def test_hand_signed_file_loads_and_unknown_stream_keys_are_dropped(tmp_path):
    """The helper builds files load() accepts, so each corruption below fails for the reason it names."""
    header = good_header()
    header["streams"][1]["from_the_future"] = [1, 2]
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign(header, states(2).astype("<f4").tobytes()))
    back = checkpoint.load(str(path))
    assert back.streams[1] == {"id": "s1", "last_seq": 1, "boot": 7, "last_t": 1001.5}
    assert back.streams[0]["seen"] == 5.0 and np.array_equal(back.states, states(2))


def test_save_refuses_states_of_the_wrong_shape(tmp_path):
    path = str(tmp_path / "s.ckpt")
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(3, 3\)"):
        checkpoint.save(path, Checkpoint.of("abc", S, streams(3), states(2)))
    assert os.listdir(tmp_path) == []


# --- content validation behind a valid checksum --------------------------------------------------------------


def set_header(key, value):
    def mutate(h):
        h[key] = value
    return mutate


def drop_header(key):
    def mutate(h):
        del h[key]
    return mutate


def set_stream(field, value, k=0):
    def mutate(h):
        h["streams"][k][field] = value
    return mutate


def drop_stream(field):
    def mutate(h):
        del h["streams"][0][field]
    return mutate


def duplicate_ids(h):
    h["streams"][1]["id"] = h["streams"][0]["id"]


CORRUPT_HEADERS = {
    "header_is_a_list": (lambda h: [h], "must be a JSON object, found a list"),
    "header_is_a_number": (lambda h: 3, "must be a JSON object, found 3"),
    "model_hash_missing": (drop_header("model_hash"), "model_hash must be a string, found null"),
    "model_hash_number": (set_header("model_hash", 5), "model_hash must be a string, found 5"),
    "state_size_missing": (drop_header("state_size"), "state_size must be a positive integer, found null"),
    "state_size_zero": (set_header("state_size", 0), "state_size must be a positive integer, found 0"),
    "state_size_negative": (set_header("state_size", -3), "state_size must be a positive integer, found -3"),
    "state_size_string": (set_header("state_size", "3"), "state_size must be a positive integer, found the str"),
    "state_size_float": (set_header("state_size", 3.0), "state_size must be a positive integer, found 3.0"),
    "state_size_bool": (set_header("state_size", True), "state_size must be a positive integer, found true"),
    "streams_missing": (drop_header("streams"), "streams must be a list, found null"),
    "streams_object": (set_header("streams", {"s0": {}}), "streams must be a list, found an object"),
    "stream_not_object": (set_header("streams", [5]), "stream 0 must be a JSON object, found 5"),
    "stream_lacks_id": (drop_stream("id"), "stream 0 lacks 'id'"),
    "stream_lacks_last_seq": (drop_stream("last_seq"), "stream 0 lacks 'last_seq'"),
    "stream_lacks_boot": (drop_stream("boot"), "stream 0 lacks 'boot'"),
    "stream_lacks_last_t": (drop_stream("last_t"), "stream 0 lacks 'last_t'"),
    "id_empty": (set_stream("id", ""), "stream 0: id must be a non-empty string, found the string ''"),
    "id_number": (set_stream("id", 5), "stream 0: id must be a non-empty string, found 5"),
    "id_null": (set_stream("id", None), "stream 0: id must be a non-empty string, found null"),
    "id_too_long": (set_stream("id", "x" * 129), "stream 0: id is 129 UTF-8 bytes, more than 128"),
    "id_too_long_in_utf8": (set_stream("id", "é" * 65), "stream 0: id is 130 UTF-8 bytes, more than 128"),
    "id_lone_surrogate": (set_stream("id", "a\ud800"), "stream 0: id .* is not valid Unicode"),
    "id_duplicate": (duplicate_ids, "stream 1: id 's0' appears twice"),
    "last_seq_negative": (set_stream("last_seq", -1), r"stream 0: last_seq must be null or an integer in \[0, 2\*\*32"),
    "last_seq_2_32": (set_stream("last_seq", 2**32), r"last_seq must be null or an integer .*found 4294967296"),
    "last_seq_float": (set_stream("last_seq", 1.5), "last_seq must be null or an integer"),
    "last_seq_bool": (set_stream("last_seq", True), "last_seq must be null or an integer .*found true"),
    "last_seq_string": (set_stream("last_seq", "3"), "last_seq must be null or an integer"),
    "boot_negative": (set_stream("boot", -1), "stream 0: boot must be null or an integer"),
    "boot_2_32": (set_stream("boot", 2**32, k=1), "stream 1: boot must be null or an integer"),
    "boot_list": (set_stream("boot", [1]), "boot must be null or an integer .*found a list"),
    "last_t_nan": (set_stream("last_t", float("nan")), "stream 0: last_t must be null or a finite number, found NaN"),
    "last_t_inf": (set_stream("last_t", float("-inf")), "last_t must be null or a finite number, found -Infinity"),
    "last_t_string": (set_stream("last_t", "noon"), "last_t must be null or a finite number"),
    "last_t_bool": (set_stream("last_t", False), "last_t must be null or a finite number, found false"),
    "last_t_beyond_float": (set_stream("last_t", 10**400), "last_t must be null or a finite number, found a very"),
    "seen_string": (set_stream("seen", "now"), "stream 0: seen must be a finite number"),
    "seen_null": (set_stream("seen", None), "stream 0: seen must be a finite number, found null"),
    "seen_inf": (set_stream("seen", float("inf")), "seen must be a finite number, found Infinity"),
}


@pytest.mark.parametrize("mutate, match", CORRUPT_HEADERS.values(), ids=CORRUPT_HEADERS.keys())
def test_signed_but_invalid_header_is_a_checkpoint_error(tmp_path, mutate, match):
    header = good_header()
    header = mutate(header) or header               # a mutation may return a replacement header
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign(header, states(2).astype("<f4").tobytes()))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(str(path))


def nan_state():
    raw = states(2)
    raw[1, 2] = np.nan
    return raw.astype("<f4").tobytes()


def inf_state():
    raw = states(2)
    raw[0, 0] = -np.inf
    return raw.astype("<f4").tobytes()


GOOD_RAW = states(2).astype("<f4").tobytes()
CORRUPT_FILES = {
    "header_not_json": (dict(header=b"{\"model_hash\":"), "header is not valid UTF-8 JSON"),
    "header_not_utf8": (dict(header=b"\xff\xfe{}"), "header is not valid UTF-8 JSON"),
    "header_nested_too_deep": (dict(header=b"[" * 200_000 + b"]" * 200_000), "header is not valid UTF-8 JSON"),
    "header_length_past_end": (dict(header_len=10**6), "header length 1000000 runs past the end of the file"),
    "states_short": (dict(raw=GOOD_RAW[:-4]), r"states section is 20 bytes, expected 24 \(2 streams x 3 float32\)"),
    "states_trailing": (dict(raw=GOOD_RAW + b"\0"), "states section is 25 bytes, expected 24"),
    "states_missing": (dict(raw=b""), "states section is 0 bytes, expected 24"),
    "states_nan": (dict(raw=nan_state()), "stream 1: its state holds NaN or Inf"),
    "states_inf": (dict(raw=inf_state()), "stream 0: its state holds NaN or Inf"),
    "version_newer": (dict(version=3), "version 3 was written by a newer edgelstm; upgrade edgelstm"),
    "version_zero": (dict(version=0), "version 0 is not supported"),
}


@pytest.mark.parametrize("parts, match", CORRUPT_FILES.values(), ids=CORRUPT_FILES.keys())
def test_signed_but_malformed_file_is_a_checkpoint_error(tmp_path, parts, match):
    parts = {"header": good_header(), "raw": GOOD_RAW, **parts}
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign(**parts))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(str(path))


def test_a_huge_state_size_is_refused_without_allocating(tmp_path):
    header = good_header()
    header["state_size"] = 10**15                   # 2 streams would need 8 PB: compared before any allocation
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign(header, GOOD_RAW))
    with pytest.raises(CheckpointError, match="states section is 24 bytes, expected 8000000000000000"):
        checkpoint.load(str(path))


def test_bad_magic_and_bad_checksum_still_say_so(tmp_path):
    path = tmp_path / "s.ckpt"
    path.write_bytes(b"ELSTMCK2" + sign(good_header(), GOOD_RAW)[8:])
    with pytest.raises(CheckpointError, match="bad magic"):
        checkpoint.load(str(path))
    data = bytearray(sign(good_header(), GOOD_RAW))
    data[-40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(str(path))


# --- version 2: positions as columns ------------------------------------------------------------------------


def sign_v2(header: dict, positions: bytes, raw: bytes) -> bytes:
    text = json.dumps(header).encode()
    body = checkpoint.MAGIC + struct.pack("<II", 2, len(text)) + text
    body += bytes(-len(body) % 8) + positions + raw
    return body + hashlib.sha256(body).digest()


def good_v2():
    ck = Checkpoint.of("abc", S, streams(2, seen=[5.0, None]), states(2))
    header = {"model_hash": "abc", "state_size": S, "ids": ck.ids, "saved_at": 1.0}
    return header, ck.positions.copy(), GOOD_RAW


def test_version_2_is_what_save_writes_and_reads_back_bit_for_bit(tmp_path):
    header, positions, raw = good_v2()
    path = tmp_path / "s.ckpt"
    checkpoint.save(str(path), Checkpoint("abc", S, header["ids"], positions, states(2)))
    data = path.read_bytes()
    assert struct.unpack_from("<I", data, 8)[0] == 2
    at = data.index(positions.tobytes())
    assert at % 8 == 0, "the positions section is 8-byte aligned"
    back = checkpoint.load(str(path))
    assert back.positions.tobytes() == positions.tobytes() and back.ids == ["s0", "s1"]
    assert back.streams[1] == {"id": "s1", "last_seq": 1, "boot": 7, "last_t": 1001.5}
    path.write_bytes(sign_v2(header, positions.tobytes(), raw))
    assert checkpoint.load(str(path)).streams == back.streams


def test_unknown_positions_round_trip_as_none(tmp_path):
    path = str(tmp_path / "s.ckpt")
    ck = Checkpoint.of("abc", S, [{"id": "a", "last_seq": None, "boot": None, "last_t": None}], states(1))
    checkpoint.save(path, ck)
    assert checkpoint.load(path).streams == [{"id": "a", "last_seq": None, "boot": None, "last_t": None}]


def set_position(field, value, k=0):
    def mutate(header, positions):
        positions[k][field] = value
    return mutate


def set_ids(value):
    def mutate(header, positions):
        header["ids"] = value
    return mutate


CORRUPT_V2 = {
    "ids_missing": (set_ids(None), "ids must be a list, found null"),
    "ids_object": (set_ids({"s0": 1}), "ids must be a list, found an object"),
    "id_number": (set_ids([5, "s1"]), "stream 0: id must be a non-empty string, found 5"),
    "id_duplicate": (set_ids(["s0", "s0"]), "stream 1: id 's0' appears twice"),
    "id_too_long": (set_ids(["s0", "y" * 129]), "stream 1: id is 129 UTF-8 bytes"),
    "ids_one_too_many": (set_ids(["s0", "s1", "s2"]), r"positions section is 88 bytes, expected 96 \(3 streams x 32\)"),
    "last_seq_2_32": (set_position("last_seq", 2**32), r"stream 0: last_seq must be -1 \(not known\) or in"),
    "last_seq_minus_2": (set_position("last_seq", -2, k=1), "stream 1: last_seq must be -1"),
    "boot_huge": (set_position("boot", 2**40), "stream 0: boot must be -1"),
    "last_t_inf": (set_position("last_t", np.inf), "stream 0: last_t must be NaN .*found inf"),
    "seen_minus_inf": (set_position("seen", -np.inf, k=1), "stream 1: seen must be NaN"),
}


@pytest.mark.parametrize("mutate, match", CORRUPT_V2.values(), ids=CORRUPT_V2.keys())
def test_signed_but_invalid_version_2_is_a_checkpoint_error(tmp_path, mutate, match):
    header, positions, raw = good_v2()
    mutate(header, positions)
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign_v2(header, positions.tobytes(), raw))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(str(path))


def test_version_2_sections_of_the_wrong_size_are_refused(tmp_path):
    header, positions, raw = good_v2()
    path = tmp_path / "s.ckpt"
    path.write_bytes(sign_v2(header, positions.tobytes()[:-8], raw))
    with pytest.raises(CheckpointError, match="expected 24"):
        checkpoint.load(str(path))
    path.write_bytes(sign_v2(header, positions.tobytes(), raw + b"\0" * 4))
    with pytest.raises(CheckpointError, match="states section is 28 bytes, expected 24"):
        checkpoint.load(str(path))


# --- most_recent ---------------------------------------------------------------------------------------------


def test_most_recent_keeps_the_latest_seen_streams_in_file_order():
    ck = Checkpoint.of("abc", S, streams(5, seen=[5.0, 9.0, None, 9.0, 1.0]), states(5))
    two = ck.most_recent(2)
    assert [s["id"] for s in two.streams] == ["s1", "s3"]
    assert np.array_equal(two.states, states(5)[[1, 3]]) and two.model_hash == "abc" and two.state_size == S
    assert [s["id"] for s in ck.most_recent(3).streams] == ["s0", "s1", "s3"]
    assert [s["id"] for s in ck.most_recent(4).streams] == ["s0", "s1", "s3", "s4"]   # missing seen counts as 0.0
    assert [s["id"] for s in ck.most_recent(99).streams] == ["s0", "s1", "s2", "s3", "s4"]
    none = ck.most_recent(0)
    assert none.streams == [] and none.states.shape == (0, S)
    assert len(ck.streams) == 5, "most_recent must not change the checkpoint it selects from"


def test_most_recent_ties_keep_file_order():
    ck = Checkpoint.of("abc", S, streams(4, seen=[2.0, 2.0, 2.0, 1.0]), states(4))
    assert [s["id"] for s in ck.most_recent(2).streams] == ["s0", "s1"]
    unseen = Checkpoint.of("abc", S, streams(3), states(3))
    assert [s["id"] for s in unseen.most_recent(2).streams] == ["s0", "s1"]


def test_most_recent_refuses_a_negative_capacity():
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        Checkpoint.of("abc", S, streams(1), states(1)).most_recent(-1)


# --- the lock ------------------------------------------------------------------------------------------------

HOLDER = """
    import sys
    from edgelstm.daemon import checkpoint
    lock = checkpoint.acquire_lock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()                # hold the lock until the parent closes stdin; exit without release()
"""

CONTENDER = """
    import sys
    from edgelstm.daemon import checkpoint
    try:
        checkpoint.acquire_lock(sys.argv[1])
    except checkpoint.CheckpointError as exc:
        print(exc)
    else:
        print("acquired")
"""


def test_lock_is_refused_to_a_second_process_and_freed_when_the_holder_exits(tmp_path):
    path = str(tmp_path / "s.ckpt")
    holder = run_python(HOLDER, path, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with pytest.raises(CheckpointError) as exc:
            checkpoint.acquire_lock(path)
        assert str(exc.value) == (f"checkpoint {path} is in use by another edgelstm (pid {holder.pid}): "
                                  f"give each daemon its own checkpoint path")
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with checkpoint.acquire_lock(path) as lock:     # the kernel dropped the dead holder's lock
        assert lock.held
        assert open(path + ".lock").read().strip() == str(os.getpid())
    assert not lock.held


def test_lock_held_here_is_refused_to_another_process_until_released(tmp_path):
    path = str(tmp_path / "s.ckpt")
    lock = checkpoint.Lock(path)
    out, _ = run_python(CONTENDER, path).communicate(timeout=60)
    assert f"is in use by another edgelstm (pid {os.getpid()})" in out
    lock.release()
    lock.release()                                  # a second release does nothing
    out, _ = run_python(CONTENDER, path).communicate(timeout=60)
    assert out.strip() == "acquired"


def test_lock_is_not_inherited_by_programs_the_daemon_starts(tmp_path):
    path = str(tmp_path / "s.ckpt")
    lock = checkpoint.acquire_lock(path)
    child = subprocess.Popen(["sleep", "60"], close_fds=False)     # outlives the lock if it inherited the fd
    try:
        lock.release()
        out, _ = run_python(CONTENDER, path).communicate(timeout=60)
        assert out.strip() == "acquired"
    finally:
        child.kill()
        child.wait()


def test_lock_in_a_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open the lock file .* choose another checkpoint path"):
        checkpoint.acquire_lock(str(tmp_path / "missing" / "s.ckpt"))


# --- the atomic write and its temporary files ----------------------------------------------------------------


def test_temp_files_are_unique_private_and_gone_afterwards(tmp_path):
    """Two writers of one path (here one nested in the other) each get their own temp file, mode 0600."""
    path = str(tmp_path / "f")
    seen = {}

    def inner():
        seen["inner"] = temps(tmp_path)
        yield b"inner"

    def outer():
        seen["outer"] = temps(tmp_path)
        atomic_write(path, inner())
        yield b"outer"

    atomic_write(path, outer())
    assert len(seen["outer"]) == 1 and len(seen["inner"]) == 2 and seen["outer"][0] in seen["inner"]
    assert open(path, "rb").read() == b"outer"      # the last rename wins, whole
    assert temps(tmp_path) == [] and os.listdir(tmp_path) == ["f"]


def test_temp_file_is_private_while_written_and_the_final_mode_ignores_umask(tmp_path):
    modes = []

    def chunks():
        modes.extend(stat.S_IMODE(os.stat(tmp_path / t).st_mode) for t in temps(tmp_path))
        yield b"x"

    atomic_write(str(tmp_path / "ckpt"), chunks())
    assert modes == [0o600] and stat.S_IMODE(os.stat(tmp_path / "ckpt").st_mode) == 0o600
    old = os.umask(0o077)
    try:
        atomic_write(str(tmp_path / "model"), [b"m"], mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "model").st_mode) == 0o644


def test_failing_chunks_leave_the_old_file_and_no_temp(tmp_path):
    path = str(tmp_path / "f")
    atomic_write(path, [b"old"])

    def chunks():
        yield b"half of the new"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        atomic_write(path, chunks())
    assert open(path, "rb").read() == b"old" and temps(tmp_path) == []


EFBIG_WRITER = """
    import errno, resource, signal, sys
    import numpy as np
    from edgelstm.daemon import checkpoint
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # so a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    n = 200
    ids = [{"id": f"n{i}", "last_seq": i, "boot": None, "last_t": None, "seen": 1.0} for i in range(n)]
    try:
        checkpoint.save(sys.argv[1], checkpoint.Checkpoint.of("new", 50, ids, np.ones((n, 50), np.float32)))
    except OSError as exc:
        print(errno.errorcode[exc.errno])
    else:
        print("written")
"""


def test_a_write_past_the_file_size_limit_keeps_the_old_checkpoint(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE), the same path through the code as ENOSPC on a full disk."""
    path = str(tmp_path / "s.ckpt")
    old = Checkpoint.of("old", S, streams(2, seen=[1.0, 2.0]), states(2))
    checkpoint.save(path, old)
    out, err = run_python(EFBIG_WRITER, path).communicate(timeout=120)
    assert out.strip() == "EFBIG", err
    back = checkpoint.load(path)
    assert back.model_hash == "old" and back.streams == old.streams and np.array_equal(back.states, old.states)
    assert os.listdir(tmp_path) == ["s.ckpt"]


def test_a_failing_rename_keeps_the_old_target_and_removes_the_temp(tmp_path):
    target = tmp_path / "s.ckpt"
    target.mkdir()                                   # os.replace of a file over a directory fails: EISDIR
    (target / "inside").write_bytes(b"keep")
    with pytest.raises(IsADirectoryError):
        checkpoint.save(str(target), Checkpoint.of("abc", S, streams(2), states(2)))
    assert (target / "inside").read_bytes() == b"keep" and sorted(os.listdir(tmp_path)) == ["s.ckpt"]


def test_writes_to_impossible_places_raise_oserror_and_leave_nothing(tmp_path):
    ck = Checkpoint.of("abc", S, streams(1), states(1))
    (tmp_path / "plain").write_bytes(b"a file, not a directory")
    with pytest.raises(NotADirectoryError):
        checkpoint.save(str(tmp_path / "plain" / "s.ckpt"), ck)
    gone = tmp_path / "gone"
    gone.mkdir()
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        checkpoint.save(str(gone / "s.ckpt"), ck)
    with pytest.raises(OSError):
        checkpoint.save("/proc/edgelstm-test.ckpt", ck)
    assert os.listdir(tmp_path) == ["plain"] and not os.path.exists("/proc/edgelstm-test.ckpt")


def test_deploy_save_writes_a_readable_model_and_no_temp(tmp_path, rng):
    spec = random_spec(rng)
    path = tmp_path / "m.elstm"
    assert deploy.save(spec, path) == spec.content_hash()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644 and os.listdir(tmp_path) == ["m.elstm"]
    assert deploy.load(path).content_hash() == spec.content_hash()
    blocked = tmp_path / "dir.elstm"
    blocked.mkdir()
    with pytest.raises(IsADirectoryError):
        deploy.save(spec, blocked)
    assert sorted(os.listdir(tmp_path)) == ["dir.elstm", "m.elstm"]

