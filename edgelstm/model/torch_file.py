"""Read `torch.save` / `torch.jit.save` files without torch and without running pickled code.

Three layouts:
  * zip (torch.save since PyTorch 1.6): <name>/data.pkl + <name>/data/<key> raw storages +
    <name>/byteorder;
  * TorchScript (torch.jit.save): the same zip plus <name>/code/ and <name>/constants.pkl; its
    data.pkl pickles __torch__.* module objects (code/ is never executed or imported);
  * legacy (torch.save(..., _use_new_zipfile_serialization=False)): five concatenated items:
    pickle(magic 0x1950a86a20f9469cfc6c), pickle(protocol 1001), pickle(sys_info), the object's
    pickle (storages as persistent ids ('storage', type, key, location, numel, view)), pickle(list
    of storage keys), then per key an 8-byte little-endian element count and the raw bytes.
Every pickle goes through pickle_reader's restricted unpickler; every storage is bounds-checked
against the bytes really present before it is used. bfloat16 storages become float32 exactly.
"""

from __future__ import annotations

import zipfile

from ..errors import ModelFormatError
from .pickle_reader import Deferred, pickle_end, unpickle
from .raw_arrays import ByteOrder, array_from_bytes, itemsize

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_MAGIC_PICKLE = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."     # the LONG1 opcode of the magic number
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 1 << 31


def is_legacy(head: bytes) -> bool:
    """Whether the first bytes of a file are the legacy torch.save magic number."""
    return head[:1] == b"\x80" and LEGACY_MAGIC_PICKLE in head[:40]


def is_zip(path) -> bool:
    """zipfile.is_zipfile, but a damaged archive (which makes it raise BadZipFile) counts as a zip."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return True


def archive_layout(names: list[str]) -> tuple[str, bool] | None:
    """(prefix, is_torchscript) of a torch zip archive, None when `names` is not one."""
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        return None
    prefix = pkl[0].rsplit("/", 1)[0]
    script = f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names)
    return prefix, script


def _read_member(archive: zipfile.ZipFile, name: str, expected: int | None = None) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFormatError(f"{name} is missing from the .pt archive") from None
    if expected is not None and info.file_size != expected:
        raise ModelFormatError(f"{name} holds {info.file_size:,} bytes but the pickle says {expected:,}; the file is "
                               f"corrupt or truncated")
    if info.file_size > MAX_PICKLE_BYTES:
        raise ModelFormatError(f"{name} is {info.file_size:,} bytes, too large to be a model")
    try:
        return archive.read(name)
    except Exception as exc:    # BadZipFile, bad CRC, unsupported compression (NotImplementedError), zlib.error...
        raise ModelFormatError(f"cannot read {name} from the .pt archive ({exc})") from None


def read_archive(path) -> tuple[object, str, zipfile.ZipFile, str]:
    """(object, kind 'torch' | 'torchscript', the open archive (caller closes), prefix)."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:    # zipfile raises BadZipFile, OSError, NotImplementedError, ValueError...
        raise ModelFormatError(f"{path}: not a readable zip archive ({exc})") from None
    try:
        layout = archive_layout(archive.namelist())
        if layout is None:
            raise ModelFormatError(f"{path}: expected one <name>/data.pkl in the archive")
        prefix, script = layout
        if f"{prefix}/byteorder" in archive.namelist():
            byteorder = _read_member(archive, f"{prefix}/byteorder").decode("ascii", "replace").strip()
        else:
            byteorder = "little"     # files from PyTorch < 2.1 have no record; they were little-endian
        order = {"little": "<", "big": ">"}.get(byteorder)
        if order is None:
            raise ModelFormatError(f"{path}: unknown byte order {byteorder!r:.20}")

        def storage(key, code, numel):
            raw = _read_member(archive, f"{prefix}/data/{key}", numel * itemsize(code))
            return array_from_bytes(raw, code, order)

        obj = unpickle(_read_member(archive, f"{prefix}/data.pkl"), storage)
        return obj, ("torchscript" if script else "torch"), archive, prefix
    except BaseException:
        archive.close()
        raise


def read_legacy(data: bytes):
    """The object in a legacy (non-zip) torch.save file's bytes."""
    pos, header = 0, []
    for _ in range(3):
        end = pickle_end(data, pos)
        header.append(unpickle(data[pos:end], _no_storages))
        pos = end
    magic, protocol, sys_info = header
    if magic != LEGACY_MAGIC:
        raise ModelFormatError("not a legacy torch.save file (wrong magic number)")
    if protocol != LEGACY_PROTOCOL:
        raise ModelFormatError(f"legacy torch.save protocol {protocol!r:.20} is not supported (expected 1001); "
                               f"re-save with a current PyTorch")
    order: ByteOrder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    obj_start, obj_end = pos, pickle_end(data, pos)
    wanted: dict[str, tuple[str, int]] = {}

    def record(key, code, numel):
        wanted[key] = (code, numel)
        return Deferred()

    unpickle(data[obj_start:obj_end], record)          # pass 1: which storages, of what dtype
    keys_end = pickle_end(data, obj_end)
    keys = unpickle(data[obj_end:keys_end], _no_storages)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFormatError("malformed storage key list in the legacy .pt file")
    storages, pos = {}, keys_end
    for key in keys:
        if key not in wanted:
            raise ModelFormatError(f"legacy .pt file lists storage {key} that no tensor uses; it is corrupt")
        code, numel = wanted[key]
        if pos + 8 > len(data):
            raise ModelFormatError(f"legacy .pt file is truncated before storage {key}")
        count = int.from_bytes(data[pos:pos + 8], "little")
        if count != numel:
            raise ModelFormatError(f"storage {key} holds {count:,} elements but the pickle says {numel:,}; corrupt")
        nbytes = count * itemsize(code)
        if pos + 8 + nbytes > len(data):
            raise ModelFormatError(f"legacy .pt file is truncated inside storage {key} ({nbytes:,} bytes declared, "
                                   f"{len(data) - pos - 8:,} present)")
        storages[key] = array_from_bytes(data[pos + 8:pos + 8 + nbytes], code, order)
        pos += 8 + nbytes
    missing = sorted(set(wanted) - set(storages))
    if missing:
        raise ModelFormatError(f"legacy .pt file lacks the data of storages {missing[:5]}; it is truncated")
    return unpickle(data[obj_start:obj_end], lambda key, code, numel: storages[key])   # pass 2, with the data


def _no_storages(key, code, numel):
    raise ModelFormatError("unexpected tensor in a legacy .pt file header")


def read_torch_file(path) -> object:
    """The object stored by torch.save (typically a dict), tensors as NumPy arrays.

    Whole pickled modules and TorchScript modules come back as inert stand-ins
    (see module_tree.read_module_tree for their tree); nothing from the file is ever called.
    """
    with open(path, "rb") as fh:
        head = fh.read(40)
    if is_zip(path):
        obj, _kind, archive, _prefix = read_archive(path)
        archive.close()
        return obj
    if is_legacy(head):
        with open(path, "rb") as fh:
            return read_legacy(fh.read())
    raise ModelFormatError(f"{path} is neither a zip-format nor a legacy torch.save file; re-save it with "
                           f"torch.save(model.state_dict(), path)")
