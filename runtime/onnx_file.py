"""Read the initializers (weights) of an ONNX model file without the onnx package.

The runtime runs an int8 model's step with chargen's own int8 kernel, which needs the
model's weights as numpy arrays; the runtime must not depend on the onnx package (nor
protobuf, nor torch). So this module decodes the few protobuf messages involved by hand:
ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto. Every other field is
skipped by its wire type; length-delimited fields are skipped by slicing a memoryview
(only varints are decoded byte by byte), so a model of tens of MB parses in milliseconds.

    read_initializers(path, names=None) -> {name: numpy array}
    read_metadata(path) -> {key: value}   (metadata_props: which engine to open the model with)

Any problem (missing file, truncated or corrupt protobuf, data that does not fit the
dims, external data, an unsupported data type) raises OnnxFileError, a ValueError.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["OnnxFileError", "read_initializers", "read_metadata"]


class OnnxFileError(ValueError):
    """The file is not a readable ONNX model, or a requested initializer cannot be decoded."""


# TensorProto.DataType -> numpy dtype
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
           9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
# The TensorProto field holding the values when there is no raw_data: float_data (4),
# int64_data (7), double_data (10), uint64_data (11); int32_data (5) for all the others
# (float16 as its uint16 bit patterns).
_TYPED_FIELD = {1: 4, 7: 7, 11: 10, 12: 11, 13: 11}
_FIXED = {4: "<f4", 10: "<f8"}  # the fixed-width ones; the rest are varints
_CORRUPT = "truncated or corrupt protobuf: "


class _Bad(Exception):
    """What is wrong, without the file name (read_initializers adds it)."""


def _varint(buf, pos):
    result = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise _Bad(_CORRUPT + "a varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
        shift += 7
    raise _Bad(_CORRUPT + "a varint is longer than 10 bytes")


def _fields(buf):
    """Yield (field number, wire type, value) for each field of a message: an int for a
    varint, else a memoryview of its bytes (fixed64, length-delimited, fixed32)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0 or wire not in (0, 1, 2, 5):  # 3, 4: groups (deprecated); 6, 7: invalid
            raise _Bad(_CORRUPT + f"field {field} has wire type {wire}")
        if wire == 0:
            value, pos = _varint(buf, pos)
        else:
            size, pos = _varint(buf, pos) if wire == 2 else (8 if wire == 1 else 4, pos)
            value, pos = buf[pos : pos + size], pos + size  # a slice: no copy
            if pos > end:
                raise _Bad(_CORRUPT + f"field {field} runs past the end of its message")
        yield field, wire, value


def _check(wire, want, what):
    if wire not in want:
        raise _Bad(_CORRUPT + f"{what} has wire type {wire}")


def _packed_varints(view):
    """Decode packed varints with numpy (as uint64), not byte by byte in Python."""
    b = np.frombuffer(view, np.uint8)
    if not b.size:
        return np.zeros(0, np.uint64)
    if b[-1] >= 0x80:
        raise _Bad(_CORRUPT + "packed varints run past the end of their field")
    ends = np.flatnonzero(b < 0x80)  # the last byte of each varint
    starts = np.r_[0, ends[:-1] + 1]
    if (ends - starts).max() >= 10:
        raise _Bad(_CORRUPT + "a varint is longer than 10 bytes")
    shift = (np.arange(b.size) - np.repeat(starts, ends - starts + 1)).astype(np.uint64) * np.uint64(7)
    return np.add.reduceat((b & 0x7F).astype(np.uint64) << shift, starts)


def _repeated(parts, field):
    """A repeated scalar field's values from its occurrences (unpacked or packed), in order:
    little-endian floats for float_data and double_data, else varints as uint64."""
    fixed = _FIXED.get(field)
    chunks, loose = [], []
    for wire, value in parts:
        if fixed:  # one value (fixed32/fixed64) or packed: little-endian bytes either way
            _check(wire, (2, 5 if fixed == "<f4" else 1), f"tensor field {field}")
            if len(value) % np.dtype(fixed).itemsize:
                raise _Bad(_CORRUPT + f"packed tensor field {field} has {len(value)} bytes")
            chunks.append(np.frombuffer(value, fixed))
        elif wire == 0:
            loose.append(value)
        else:
            _check(wire, (2,), f"tensor field {field}")
            chunks += [np.array(loose, np.uint64), _packed_varints(value)]
            loose = []
    chunks.append(np.array(loose, fixed or np.uint64))
    return np.concatenate(chunks)


def _scalar(tensor, field, default=0):
    wire, value = tensor.get(field, [(0, default)])[-1]  # the last occurrence wins
    _check(wire, (0,), f"tensor field {field}")
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode(t, name):
    if _scalar(t, 14) == 1 or 13 in t:  # data_location EXTERNAL, external_data
        raise _Bad(f"tensor {name!r} is stored in an external file; chargen reads self-contained models only")
    code = _scalar(t, 2)
    if code not in _DTYPES:
        raise _Bad(f"tensor {name!r} has data type {code}, which chargen does not read")
    dtype = np.dtype(_DTYPES[code])
    dims = [int(d) for d in _repeated(t.get(1, []), 1).view(np.int64)]
    if any(d < 0 for d in dims):
        raise _Bad(f"tensor {name!r} has negative dims {dims}")
    count = math.prod(dims)
    if 9 in t:  # raw_data: little-endian, whatever the data type
        wire, raw = t[9][-1]
        _check(wire, (2,), "tensor field 9")
        if len(raw) != count * dtype.itemsize:
            raise _Bad(f"tensor {name!r} has {len(raw)} bytes of raw_data; dims {dims} of {dtype} need "
                       f"{count * dtype.itemsize}")
        flat = np.frombuffer(raw, dtype.newbyteorder("<"))
    else:
        field = _TYPED_FIELD.get(code, 5)
        flat = _repeated(t.get(field, []), field)
        if field not in _FIXED:
            flat = flat.view(np.int64)
            flat = flat.astype(np.uint16).view(np.float16) if code == 10 else flat
        if flat.size != count:
            raise _Bad(f"tensor {name!r} has {flat.size} values; dims {dims} need {count}")
    return flat.reshape(dims).astype(dtype)  # a copy: writeable, native byte order, owns its memory


def _read(buf, wanted):
    out, graphs = {}, 0
    for field, wire, graph in _fields(buf):
        if field != 7:
            continue
        _check(wire, (2,), "the model's graph")
        graphs += 1
        for gfield, gwire, tensor in _fields(graph):
            if gfield != 5:
                continue
            _check(gwire, (2,), "an initializer")
            t = {}
            for f, w, v in _fields(tensor):
                t.setdefault(f, []).append((w, v))
            wire, name = t.get(8, [(2, b"")])[-1]
            _check(wire, (2,), "a tensor name")
            try:
                name = bytes(name).decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad(_CORRUPT + "a tensor name is not UTF-8") from None
            if wanted is None or name in wanted:
                out[name] = _decode(t, name)
    if not graphs:
        raise _Bad("no graph in the file (not an ONNX model?)")
    return out


def _metadata_entry(entry) -> tuple[str, str]:
    """A StringStringEntryProto {1: key, 2: value}."""
    kv = {1: b"", 2: b""}
    for f, w, v in _fields(entry):
        if f in kv:
            _check(w, (2,), "a metadata key or value")
            kv[f] = v
    try:
        return bytes(kv[1]).decode("utf-8"), bytes(kv[2]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(_CORRUPT + "a metadata entry is not UTF-8") from None


def _metadata(f, size: int) -> dict[str, str]:
    """ModelProto.metadata_props (14), reading only the model's field headers and those
    entries: the graph before them is skipped by a seek, whatever its size."""
    out, pos = {}, 0
    while pos < size:
        f.seek(pos)
        head = f.read(20)  # a key and a length: two varints of at most 10 bytes
        key, n = _varint(head, 0)
        field, wire = key >> 3, key & 7
        if field == 0 or wire not in (0, 1, 2, 5):
            raise _Bad(_CORRUPT + f"field {field} has wire type {wire}")
        if wire == 0:
            n = _varint(head, n)[1]
        elif wire in (1, 5):
            n += 8 if wire == 1 else 4
        else:
            length, n = _varint(head, n)
            if field == 14:
                f.seek(pos + n)
                entry = f.read(length)
                if len(entry) < length:
                    raise _Bad(_CORRUPT + "a metadata entry runs past the end of the file")
                k, v = _metadata_entry(memoryview(entry))
                out[k] = v
            n += length
        pos += n
    if pos > size:
        raise _Bad(_CORRUPT + "the last field runs past the end of the file")
    return out


def _load(path, parse):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OnnxFileError(f"{path}: cannot read the model file: {e.strerror or e}") from None
    try:
        return parse(memoryview(data))
    except _Bad as e:
        raise OnnxFileError(f"{path}: {e}") from None


def read_metadata(path) -> dict[str, str]:
    """The model's metadata_props as {key: value}, without reading the graph (a few small reads,
    whatever the file's size). Raises OnnxFileError."""
    try:
        with open(path, "rb") as f:
            try:
                return _metadata(f, os.fstat(f.fileno()).st_size)
            except _Bad as e:
                raise OnnxFileError(f"{path}: {e}") from None
    except OSError as e:
        raise OnnxFileError(f"{path}: cannot read the model file: {e.strerror or e}") from None


def read_initializers(path, names=None) -> dict[str, np.ndarray]:
    """The initializers of the ONNX model at `path` as {name: array} (shape = the tensor's
    dims, its numpy dtype, a fresh writeable copy). With `names`, only those tensors are
    decoded and returned; names absent from the model are absent from the result.
    Raises OnnxFileError."""
    wanted = None if names is None else {names} if isinstance(names, str) else set(names)
    return _load(path, lambda buf: _read(buf, wanted))
