"""Model files read without torch: bf16, legacy torch.save, NumPy values, Namespace, whole modules,
TorchScript, quantized refusals, safetensors without the package, and every hostile file we could make.

The committed fixtures in tests/data/model_files/ (made by make_fixtures.py with real torch) test the
torch-free path; the @pytest.mark.torch tests compare against torch itself on freshly made files.
"""

import argparse
import io
import json
import os
import pickle
import struct
import sys
import tracemalloc
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from conftest import DATA, HAVE_TORCH, golden

import edgelstm
from edgelstm import ModelFormatError, UnsafePickleError
from edgelstm.model.loader import read_arrays, sniff
from edgelstm.model.module_tree import ModuleNode, read_module_tree
from edgelstm.model.safetensors_file import read_safetensors, read_safetensors_metadata
from edgelstm.model.torch_file import read_torch_file

FILES = DATA / "model_files"
QUANTIZED = r"quantized \(quantize_dynamic\) weights: save the float model's state_dict before quantizing"


@pytest.fixture(scope="module")
def expected():
    with np.load(FILES / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def prefixed(expected, prefix):
    return {k[len(prefix) + 1:]: v for k, v in expected.items() if k.startswith(prefix + "/")}


def run(model, xs):
    return model.stream().step_many(xs)


# ---- hand-made pickles (no torch needed) ---------------------------------------------------

def G(module, name):                                  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(text):                                          # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def I(n):                                             # INT (text form, any size)  # noqa: E743
    return b"I" + str(n).encode() + b"\n"


def T(*items):                                        # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


def tensor(key, numel, size, stride, offset=0, storage="FloatStorage", view=None):
    pid = [S("storage"), G("torch", storage), S(key), S("cpu"), I(numel)] + ([view] if view else [])
    return (G("torch._utils", "_rebuild_tensor_v2") + T(T(*pid) + b"Q", I(offset), T(*map(I, size)),
            T(*map(I, stride)), b"\x89", G("collections", "OrderedDict") + b")R") + b"R")


def dict_pickle(**entries):
    return b"\x80\x02}(" + b"".join(S(k) + v for k, v in entries.items()) + b"u."


def write_zip_pt(path, data_pkl, storages=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


def legacy_bytes(obj_pickle, storages):
    """A legacy torch.save file: magic, protocol, sys_info, object, keys, then (numel u64, bytes) per storage."""
    out = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
           pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
           obj_pickle, pickle.dumps(list(storages), protocol=2)]
    for raw, itemsize in storages.values():
        out.append(struct.pack("<q", len(raw) // itemsize) + raw)
    return b"".join(out)


def write_safetensors(path, arrays, header_extra=None, dtype_names=None):
    header, blobs, offset = {}, [], 0
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        code = (dtype_names or {}).get(name) or {"f": "F", "i": "I", "u": "U"}[arr.dtype.kind] + str(8 * arr.itemsize)
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


# ---- the committed fixtures, read without torch --------------------------------------------

@pytest.mark.parametrize("name, fmt", [
    ("bf16_state_dict.pt", "torch"), ("legacy_state_dict.pt", "torch-legacy"), ("legacy_whole.pt", "torch-legacy"),
    ("whole_net.pt", "torch"), ("whole_sequential.pt", "torch"), ("scripted.pt", "torchscript"),
    ("traced.pt", "torchscript"), ("quantized_state_dict.pt", "torch"), ("numpy_checkpoint.pt", "torch"),
    ("mixed.safetensors", "safetensors")])
def test_sniff_names_every_format(name, fmt):
    assert sniff(FILES / name) == fmt


def test_bf16_state_dict_converts_exactly(expected):
    got = read_torch_file(FILES / "bf16_state_dict.pt")
    want = prefixed(expected, "bf16")
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k].view(np.uint32), v.view(np.uint32))    # bit-exact, NaN and -0 too


def test_safetensors_every_dtype_without_the_package(expected, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)          # the optional package is not used
    got = read_safetensors(FILES / "mixed.safetensors")
    want = prefixed(expected, "mixed")
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)
    assert read_safetensors_metadata(FILES / "mixed.safetensors") == {"format": "pt"}


def test_safetensors_model_loads_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    weights, xs, ys = golden("lstm_2layer_head")
    path = write_safetensors(tmp_path / "m.safetensors", weights)
    np.testing.assert_allclose(run(edgelstm.load(path), xs), ys, atol=1e-5)


def test_safetensors_matches_the_reference_reader(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2], np.int64),
              "c": np.array([0.5], np.float16), "d": np.zeros((0, 2), np.float64)}
    st.save_file(arrays, str(tmp_path / "ref.safetensors"))
    ours, ref = read_safetensors(tmp_path / "ref.safetensors"), st.load_file(str(tmp_path / "ref.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(ours[k], ref[k])
        assert ours[k].dtype == ref[k].dtype


def test_legacy_state_dict_reads_and_streams(expected):
    got = read_torch_file(FILES / "legacy_state_dict.pt")
    for k, v in prefixed(expected, "net").items():
        np.testing.assert_array_equal(got[k], v)
    np.testing.assert_allclose(run(edgelstm.load(FILES / "legacy_state_dict.pt"), expected["x"]), expected["y"],
                               atol=1e-5)


@pytest.mark.parametrize("name", ["whole_net.pt", "legacy_whole.pt"])
def test_whole_module_tree(name, expected):
    tree = read_module_tree(FILES / name)
    assert isinstance(tree, ModuleNode)
    assert tree.type_name == "__main__.Net"
    assert list(tree.children) == ["rnn", "fc"]
    assert tree.children["rnn"].type_name == "torch.nn.modules.rnn.LSTM"
    lstm = tree.children["rnn"].attributes
    assert (lstm["input_size"], lstm["hidden_size"], lstm["num_layers"], lstm["bias"], lstm["batch_first"],
            lstm["bidirectional"], lstm["proj_size"], lstm["dropout"]) == (3, 4, 1, True, False, False, 0, 0.0)
    assert tree.children["fc"].attributes == {"training": False, "in_features": 4, "out_features": 2}
    assert list(tree.buffers) == ["input_mean", "input_std"] and not tree.parameters
    want = prefixed(expected, "net")
    sd = tree.state_dict()
    assert list(sd) == list(want)                   # torch's registration order
    for k, v in want.items():
        np.testing.assert_array_equal(sd[k], v)
    np.testing.assert_allclose(run(edgelstm.load(FILES / name), expected["x"]), expected["y"], atol=1e-5)


def test_whole_sequential_tree():
    tree = read_module_tree(FILES / "whole_sequential.pt")
    assert tree.type_name == "torch.nn.modules.container.Sequential"
    assert [(k, c.type_name) for k, c in tree.children.items()] == [
        ("0", "torch.nn.modules.linear.Linear"), ("1", "torch.nn.modules.activation.ReLU")]
    assert tree.children["0"].attributes["in_features"] == 2
    assert tree.children["1"].attributes == {"training": True, "inplace": False}
    assert {k: v.shape for k, v in tree.state_dict().items()} == {"0.weight": (3, 2), "0.bias": (3,)}
    assert [p for p, _ in tree.named_modules()] == ["", "0", "1"]


@pytest.mark.parametrize("name", ["scripted.pt", "traced.pt"])
def test_torchscript_tree_without_running_its_code(name, expected, monkeypatch):
    import builtins
    monkeypatch.setattr(builtins, "exec", None)      # code/ is parsed as text, never executed
    monkeypatch.setattr(builtins, "eval", None)
    tree = read_module_tree(FILES / name)
    assert tree.type_name == "Net"
    assert [(k, c.type_name) for k, c in tree.children.items()] == [
        ("rnn", "torch.nn.modules.rnn.LSTM"), ("fc", "torch.nn.modules.linear.Linear")]
    assert list(tree.buffers) == ["input_mean", "input_std"] and not tree.parameters
    assert list(tree.children["rnn"].parameters) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    if name == "scripted.pt":                          # scripted modules keep their Final constants
        assert tree.children["rnn"].attributes["hidden_size"] == 4
        assert tree.children["fc"].attributes["in_features"] == 4
    want = prefixed(expected, "net")
    sd = tree.state_dict()
    assert list(sd) == list(want)
    for k, v in want.items():
        np.testing.assert_array_equal(sd[k], v)
    monkeypatch.undo()
    np.testing.assert_allclose(run(edgelstm.load(FILES / name), expected["x"]), expected["y"], atol=1e-5)


def test_quantized_state_dict_is_refused_with_the_fix():
    with pytest.raises(ModelFormatError, match=QUANTIZED + ".*export-c --int8"):
        edgelstm.load(FILES / "quantized_state_dict.pt")


def test_numpy_values_and_namespace(expected):
    ckpt = read_torch_file(FILES / "numpy_checkpoint.pt")
    np.testing.assert_array_equal(ckpt["scaler"]["mean"], expected["numpy/mean"])
    np.testing.assert_array_equal(ckpt["scaler"]["scale"], expected["numpy/scale"])
    assert ckpt["scaler"]["scale"].dtype == np.float32 and ckpt["scaler"]["count"].dtype == np.int16
    assert ckpt["epoch"] == 7 and isinstance(ckpt["epoch"], np.int64)
    assert ckpt["threshold"] == 0.5 and isinstance(ckpt["threshold"], np.float64)
    assert ckpt["args"].attributes == {"hidden": 4, "lr": 0.01, "name": "demo", "layers": (1, 2)}
    np.testing.assert_allclose(run(edgelstm.load(FILES / "numpy_checkpoint.pt"), expected["x"]), expected["y"],
                               atol=1e-5)


def test_numpy_pickles_of_every_protocol(tmp_path):
    values = {"f": np.linspace(0, 1, 5), "i": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.array([True]),
              "big": np.arange(3, dtype=">f4"), "fortran": np.asfortranarray(np.ones((2, 3), np.uint16)),
              "s": np.float32(1.5), "n": argparse.Namespace(a=1)}
    for protocol in (2, 3, 4, 5):
        got = read_torch_file(write_zip_pt(tmp_path / f"p{protocol}.pt", pickle.dumps(values, protocol=protocol)))
        for k in ("f", "i", "b", "big", "fortran", "s"):
            np.testing.assert_array_equal(got[k], values[k])
            assert got[k].dtype == values[k].dtype.newbyteorder("="), (protocol, k)
        assert got["n"].attributes == {"a": 1}


# ---- hostile files: nothing runs, nothing huge is allocated, every refusal names cause and fix ---

class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy", "nested in a module"])
def test_os_system_is_refused_before_anything_runs(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight_ih_l0": _System(marker)}, protocol=2)
    path = tmp_path / "evil.pt"
    if layout == "zip":
        write_zip_pt(path, payload)
    elif layout == "legacy":
        path.write_bytes(legacy_bytes(payload, {}))
    else:
        inner = payload[2:-1]                        # the dict, as the state of a pickled nn.Module
        write_zip_pt(path, b"\x80\x02" + G("torch.nn.modules.rnn", "LSTM") + b")\x81" + inner + b"b.")
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system.*never runs code.*state_dict\(\)"):
        edgelstm.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("pkl, named", [
    (b"\x80\x02" + G("mypkg.tools", "run") + T(S("touch x")) + b"R.", "mypkg.tools.run"),
    (b"\x80\x02" + G("__torch__", "Evil") + T() + b"R.", "__torch__.Evil"),
    (b"\x80\x02" + G("torch.nn.modules.linear", "Linear") + T(I(1), I(2)) + b"R.", "torch.nn.modules.linear.Linear"),
    (b"(" + S("x") + b"imypkg\nEvil\n.", "mypkg.Evil"),                                     # INST with arguments
    (b"\x80\x02" + G("mypkg", "Net") + b")\x81" + T(S("touch x")) + b"R.", "mypkg.Net"),      # calling an instance
    (b"\x80\x02" + G("builtins", "getattr") + T(S("a"), S("b")) + b"R.", "builtins.getattr"),
    (b"\x80\x02" + G("subprocess", "Popen") + T(S("ls")) + b"R.", "subprocess.Popen"),
    (b"\x80\x02" + G("torch.hub", "load") + T(S("x")) + b"R.", "torch.hub.load"),
    (b"\x80\x02" + G("numpy", "load") + T(S("x")) + b"R.", "numpy.load"),
    (b"\x80\x02" + G("functools", "partial") + T() + b"R.", "functools.partial"),
    (b"\x80\x02" + G("copyreg", "_reconstructor") + T(G("mypkg", "A"), G("mypkg", "B"), b"N") + b"R.",
     "copyreg._reconstructor"),
])
def test_no_pickled_callable_is_ever_called(tmp_path, pkl, named):
    """Classes become inert stand-ins that NEWOBJ/BUILD may fill, but no REDUCE/INST call goes through."""
    with pytest.raises(UnsafePickleError, match=rf"{named.replace('.', '[.]')}.*never runs code"):
        read_torch_file(write_zip_pt(tmp_path / "evil.pt", pkl))


def test_huge_declared_storage_is_not_allocated(tmp_path):
    pkl = dict_pickle(w=tensor("0", 10**12, (10**6, 10**6), (10**6, 1)))
    path = write_zip_pt(tmp_path / "huge.pt", pkl, {"0": b"\0" * 16})
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="holds 16 bytes but the pickle says 4,000,000,000,000"):
            read_torch_file(path)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("size, stride, offset, match", [
    ((4, 5), (5, 1), 0, "reaches past its storage"),             # 20 elements over a storage of 4
    ((2,), (1,), 3, "reaches past its storage"),
    ((10**5, 10**5), (0, 0), 0, "refusing to expand"),           # stride-0 view of 1e10 elements
    ((2, 2), (1,), 0, "malformed size/stride"),
    ((-1,), (1,), 0, "malformed size/stride")])
def test_tensor_views_are_bounds_checked(tmp_path, size, stride, offset, match):
    path = write_zip_pt(tmp_path / "v.pt", dict_pickle(w=tensor("0", 4, size, stride, offset)),
                        {"0": np.arange(4, dtype="<f4").tobytes()})
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=match):
            read_torch_file(path)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()


def test_hand_made_tensors_storage_offsets_views_and_bf16(tmp_path):
    words = np.array([0x3F80, 0xC020, 0x7F80, 0x0001], "<u2")       # 1, -2.5, inf, smallest subnormal
    pkl = dict_pickle(a=tensor("0", 6, (2, 2), (1, 2), offset=1),
                      b=tensor("1", 4, (4,), (1,), storage="BFloat16Storage"))
    got = read_torch_file(write_zip_pt(tmp_path / "t.pt", pkl, {"0": np.arange(6, dtype="<f4").tobytes(),
                                                                "1": words.tobytes()}))
    np.testing.assert_array_equal(got["a"], [[1, 3], [2, 4]])
    np.testing.assert_array_equal(got["b"].view(np.uint32), words.astype(np.uint32) << 16)
    legacy = legacy_bytes(dict_pickle(a=tensor("9", 6, (3,), (2,), storage="DoubleStorage",
                                               view=T(S("9v"), I(1), I(5)))),
                          {"9": (np.arange(6, dtype="<f8").tobytes(), 8)})
    (tmp_path / "l.pt").write_bytes(legacy)
    np.testing.assert_array_equal(read_torch_file(tmp_path / "l.pt")["a"], [1, 3, 5])


def test_huge_length_fields_in_the_pickle_are_truncation(tmp_path):
    pkl = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc."           # BINBYTES8 claiming 1 TiB
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="truncated or corrupt"):
            read_torch_file(write_zip_pt(tmp_path / "b.pt", pkl))
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["legacy_state_dict.pt", "whole_net.pt", "scripted.pt", "mixed.safetensors",
                                  "numpy_checkpoint.pt"])
def test_every_truncation_is_a_model_format_error(tmp_path, name):
    data = (FILES / name).read_bytes()
    cuts = range(0, len(data)) if len(data) < 2500 else range(0, len(data), 7)
    path = tmp_path / name
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            read_arrays(path, sniff(path))


@pytest.mark.parametrize("name", ["legacy_state_dict.pt", "mixed.safetensors", "bf16_state_dict.pt"])
def test_corrupted_bytes_never_crash(tmp_path, name):
    """Random byte flips either read (an unchecked value changed) or raise ModelFormatError: nothing else."""
    data, rng, path = (FILES / name).read_bytes(), np.random.default_rng(7), tmp_path / name
    for _ in range(300):
        damaged = bytearray(data)
        for i in rng.integers(0, len(data), size=3):
            damaged[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            read_arrays(path, sniff(path))
        except ModelFormatError:
            pass


def test_legacy_header_is_checked(tmp_path):
    good = (FILES / "legacy_state_dict.pt").read_bytes()
    bad_protocol = good.replace(pickle.dumps(1001, protocol=2), pickle.dumps(1002, protocol=2), 1)
    (tmp_path / "p.pt").write_bytes(bad_protocol)
    with pytest.raises(ModelFormatError, match="protocol 1002 is not supported.*re-save"):
        read_torch_file(tmp_path / "p.pt")
    (tmp_path / "k.pt").write_bytes(legacy_bytes(dict_pickle(a=tensor("1", 2, (2,), (1,))),
                                                 {"1": (b"\0" * 4, 4)}))       # 1 element stored, 2 declared
    with pytest.raises(ModelFormatError, match="holds 1 elements but the pickle says 2"):
        read_torch_file(tmp_path / "k.pt")


@pytest.mark.parametrize("edit, claim, match", [
    (None, 10**12, "claims 1,000,000,000,000 bytes, over the 100,000,000"),
    (None, 99_000_000, "only .* after the length; it is truncated"),
    ((b'"F32"', b'"F8_E4M3"'), None, r"unsupported dtype 'F8_E4M3' \(float8"),
    ((b"[2, 3]", b"[2, 4]"), None, "needs 32 bytes but data_offsets span 24"),
    ((b"[2, 3]", b"[2, -3]"), None, "malformed shape"),
    ((b"[0, 24]", b"[0, 9999]"), None, "outside the"),
    ((b"[24, 32]", b"[16, 24]"), None, "overlaps"),
    ((b'"x"', b"7"), None, "__metadata__ must map strings to strings"),
    ((b"{", b"[", 1), None, "not UTF-8 JSON|not a JSON object"),
])
def test_safetensors_header_is_validated_before_reading(tmp_path, edit, claim, match):
    path = write_safetensors(tmp_path / "m.safetensors", {"a": np.zeros((2, 3), np.float32),
                                                           "b": np.zeros(2, np.float32)},
                             header_extra={"__metadata__": {"format": "x"}})
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + n]
    if edit:
        assert edit[0] in header
        header = header.replace(*edit)
    path.write_bytes(struct.pack("<Q", claim or len(header)) + header + data[8 + n:])
    with pytest.raises(ModelFormatError, match=match + ".*Re-export it with safetensors"):
        read_safetensors(path)


def test_safetensors_refusal_fix_works(tmp_path):
    arrays = {"a": np.ones((2, 3), np.float32)}
    path = write_safetensors(tmp_path / "m.safetensors", arrays)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(ModelFormatError, match="4 bytes after its last tensor"):
        read_safetensors(path)
    write_safetensors(path, arrays)                  # what the message says: write it again, cleanly
    np.testing.assert_array_equal(read_safetensors(path)["a"], arrays["a"])


def test_numpy_object_and_structured_arrays_are_refused_and_the_fix_works(tmp_path):
    marker = tmp_path / "pwned"
    for bad in (np.array([1, _System(marker)], dtype=object), np.zeros(2, [("a", "f4"), ("b", "i4")]),
                np.array(["text"])):
        with pytest.raises(UnsafePickleError, match=r"only bool, integer and float|structured|object"):
            read_torch_file(write_zip_pt(tmp_path / "o.pt", pickle.dumps({"x": bad}, protocol=2)))
    assert not marker.exists()
    fixed = read_torch_file(write_zip_pt(tmp_path / "f.pt", pickle.dumps({"x": np.asarray([1, 2], np.float32)})))
    np.testing.assert_array_equal(fixed["x"], [1, 2])


def test_numpy_array_bytes_must_match_its_shape(tmp_path):
    pkl = pickle.dumps({"x": np.zeros(4)}, protocol=2)
    assert pkl.count(b"K\x04\x85") == 1
    with pytest.raises(ModelFormatError, match=r"needs 40 bytes but holds 32"):
        read_torch_file(write_zip_pt(tmp_path / "n.pt", pkl.replace(b"K\x04\x85", b"K\x05\x85")))


def test_stand_ins_hold_data_only(tmp_path):
    """A user's config object and a Namespace come back as inert records; a plain dict stays a dict."""
    pkl = (b"\x80\x02}(" + S("cfg") + G("mypkg.config", "Config") + b")\x81}(" + S("hidden") + I(8) + b"ub"
           + S("args") + G("argparse", "Namespace") + b")\x81}(" + S("lr") + I(3) + b"ub"
           + S("od") + G("collections", "OrderedDict") + b")R" + b"u.")
    got = read_torch_file(write_zip_pt(tmp_path / "c.pt", pkl))
    assert got["cfg"].qualified_name == "mypkg.config.Config" and got["cfg"].state == {"hidden": 8}
    assert got["args"].attributes == {"lr": 3}
    assert got["od"] == OrderedDict()
    with pytest.raises(ModelFormatError, match="no tensors found"):
        edgelstm.load(tmp_path / "c.pt")


def test_not_a_module_and_not_a_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no single whole pickled module"):
        read_module_tree(FILES / "legacy_state_dict.pt")
    (tmp_path / "x.pt").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(ModelFormatError, match="not a torch.save"):
        read_module_tree(tmp_path / "x.pt")


# ---- against torch itself ------------------------------------------------------------------

if HAVE_TORCH:      # module level, so torch.save(model) can pickle them by name
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(6, eps=1e-3)
            self.gru = torch.nn.GRU(6, 5, num_layers=2, batch_first=True)
            self.register_buffer("scratch", torch.zeros(3), persistent=False)
            self.register_buffer("scale", torch.ones(5))

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.kind, self.window = "demo", (3, 4)
            self.embed = torch.nn.Linear(4, 6, bias=False)
            self.blocks = torch.nn.ModuleList([Block(), Block()])
            self.act = torch.nn.LeakyReLU(0.2)
            self.head = torch.nn.Linear(5, 1)

    class Streamer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(5, 16, num_layers=2)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.head(y)


@pytest.mark.torch
def test_whole_custom_module_matches_torch(tmp_path):
    torch.manual_seed(1)
    net = Custom()
    for legacy in (False, True):
        path = tmp_path / f"custom{legacy}.pt"
        torch.save(net, path, _use_new_zipfile_serialization=not legacy)
        tree = read_module_tree(path)
        assert tree.type_name.endswith(".Custom") and tree.attributes["kind"] == "demo"
        assert tree.attributes["window"] == (3, 4)
        block = tree.children["blocks"].children["1"]
        assert block.children["norm"].attributes["normalized_shape"] == (6,)
        assert block.children["norm"].attributes["eps"] == 1e-3
        assert block.children["gru"].attributes["num_layers"] == 2
        assert tree.children["act"].attributes["negative_slope"] == 0.2
        assert "bias" not in tree.children["embed"].parameters              # None entries dropped
        sd, want = tree.state_dict(), net.state_dict()
        assert list(sd) == list(want)                                       # non-persistent buffer left out
        for k in want:
            np.testing.assert_array_equal(sd[k], want[k].numpy())


@pytest.mark.torch
@pytest.mark.parametrize("how", ["torch.save(model)", "script", "trace", "legacy"])
def test_lstm_linear_models_load_and_stream(tmp_path, how):
    torch.manual_seed(2)
    net = Streamer().eval()
    x = torch.randn(30, 1, 5)
    path = tmp_path / "m.pt"
    if how == "script":
        torch.jit.save(torch.jit.script(net), path)
    elif how == "trace":
        torch.jit.save(torch.jit.trace(net, x), path)
    else:
        torch.save(net, path, _use_new_zipfile_serialization=how != "legacy")
    with torch.no_grad():
        want = net(x)[:, 0].numpy()
    np.testing.assert_allclose(run(edgelstm.load(path), x[:, 0].numpy()), want, atol=1e-5)
    if how in ("script", "trace"):
        ref = torch.jit.load(path).state_dict()
        sd = read_module_tree(path).state_dict()
        assert list(sd) == list(ref)
        for k in ref:
            np.testing.assert_array_equal(sd[k], ref[k].numpy())


@pytest.mark.torch
def test_bf16_every_bit_pattern_matches_torch(tmp_path):
    from safetensors.torch import save_file
    words = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    t = words.view(torch.bfloat16)
    want = t.float().numpy().view(np.uint32)
    torch.save({"t": t, "view": t[1::3]}, tmp_path / "z.pt")
    torch.save({"t": t}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    save_file({"t": t}, str(tmp_path / "s.safetensors"))
    for got in (read_torch_file(tmp_path / "z.pt"), read_torch_file(tmp_path / "l.pt"),
                read_safetensors(tmp_path / "s.safetensors")):
        assert got["t"].dtype == np.float32
        np.testing.assert_array_equal(got["t"].view(np.uint32), want)
    np.testing.assert_array_equal(read_torch_file(tmp_path / "z.pt")["view"].view(np.uint32), want[1::3])


@pytest.mark.torch
def test_other_dtypes_match_torch(tmp_path):
    values = {"u16": torch.tensor([1, 65535], dtype=torch.uint16), "u32": torch.tensor([7], dtype=torch.uint32),
              "f16": torch.tensor([0.5, -2.0], dtype=torch.float16), "i8": torch.tensor([-3], dtype=torch.int8),
              "b": torch.tensor([True, False]), "f64": torch.tensor([1e-300], dtype=torch.float64),
              "c": torch.tensor([1 + 2j]), "scalar": torch.tensor(3.5), "strided": torch.arange(12.).view(3, 4).t()}
    for protocol in (2, 4):
        torch.save(values, tmp_path / "d.pt", pickle_protocol=protocol)
        got = read_torch_file(tmp_path / "d.pt")
        for k, v in values.items():
            np.testing.assert_array_equal(got[k], v.numpy())
            assert got[k].dtype == v.numpy().dtype, k
    torch.save({"f8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pt")
    with pytest.raises(ModelFormatError, match="float8_e4m3fn.*convert to float32"):
        read_torch_file(tmp_path / "f8.pt")


@pytest.mark.torch
def test_quantized_models_are_refused_and_the_float_state_dict_loads(tmp_path):
    import warnings
    torch.manual_seed(3)
    net = Streamer().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in (torch.qint8, torch.float16):
            q = torch.ao.quantization.quantize_dynamic(net, {torch.nn.LSTM, torch.nn.Linear}, dtype=dtype)
            torch.save(q.state_dict(), tmp_path / "qsd.pt")
            torch.save(q, tmp_path / "qwhole.pt")
            torch.save(q.state_dict(), tmp_path / "qlegacy.pt", _use_new_zipfile_serialization=False)
            for name in ("qsd.pt", "qwhole.pt", "qlegacy.pt"):
                with pytest.raises(ModelFormatError, match=QUANTIZED):
                    edgelstm.load(tmp_path / name)
    torch.save(net.state_dict(), tmp_path / "float.pt")               # the fix the message names
    assert edgelstm.load(tmp_path / "float.pt").spec.layers[0].hidden_size == 16


@pytest.mark.torch
def test_checkpoint_with_numpy_namespace_and_unsafe_entries(tmp_path):
    import functools
    net = Streamer().eval()
    ckpt = {"model": net.state_dict(), "args": argparse.Namespace(hidden=16, out=os.path.join("a", "b")),
            "scaler_mean": np.arange(5.0), "scaler_scale": np.float64(2.0), "optimizer":
            torch.optim.Adam(net.parameters()).state_dict(), "epoch": 3}
    torch.save(ckpt, tmp_path / "ok.pt")
    got = read_torch_file(tmp_path / "ok.pt")
    assert got["args"].attributes == {"hidden": 16, "out": os.path.join("a", "b")}
    np.testing.assert_array_equal(got["scaler_mean"], np.arange(5.0))
    assert edgelstm.load(tmp_path / "ok.pt").spec.layers[0].hidden_size == 16
    torch.save(dict(ckpt, hook=functools.partial(print, "x")), tmp_path / "bad.pt")
    with pytest.raises(UnsafePickleError, match=r"functools\.partial.*torch\.save\(model\.state_dict\(\), path\)"):
        edgelstm.load(tmp_path / "bad.pt")
    torch.save(net.state_dict(), tmp_path / "fixed.pt")               # what the message says to do
    edgelstm.load(tmp_path / "fixed.pt")


@pytest.mark.torch
def test_torch_still_reads_what_we_read(tmp_path):
    """The fixtures are genuine torch files: torch's own weights-only loader agrees with ours."""
    for name in ("bf16_state_dict.pt", "legacy_state_dict.pt"):
        ref = torch.load(FILES / name, weights_only=True)
        ours = read_torch_file(FILES / name)
        for k, v in ref.items():
            np.testing.assert_array_equal(ours[k], v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy())
    ref = torch.load(io.BytesIO((FILES / "numpy_checkpoint.pt").read_bytes()), weights_only=False)
    ours = read_torch_file(FILES / "numpy_checkpoint.pt")
    np.testing.assert_array_equal(ours["scaler"]["scale"], ref["scaler"]["scale"])
    assert ours["args"].attributes == vars(ref["args"])
