#!/usr/bin/python3
"""Minimal, dependency-free safetensors reader/writer (torch + numpy only).

File layout (https://github.com/huggingface/safetensors, "format" section):

    [8 bytes]  N = header length, unsigned 64-bit little-endian
    [N bytes]  UTF-8 JSON header:
                 { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                   ...,
                   "__metadata__": {"<str>": "<str>"} }          (optional)
    [rest]     data region; data_offsets are relative to its start, tensors are
               row-major little-endian.

The writer lays tensors out in sorted-by-name order, contiguous without gaps, and
pads the header JSON with trailing spaces so that the data region starts at an
8-byte aligned file offset (what the reference `safetensors` library does).

`write_safetensors` also accepts `LazyTensor` values (dtype + shape + a producer
callback), so a ~1 GB checkpoint can be streamed to disk one tensor at a time.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch

# safetensors dtype tag -> (itemsize, numpy little-endian dtype or None, torch dtype)
# BF16 has no numpy dtype: it is moved around as raw uint16 bits.
_DTYPES = {
    "F64": (8, np.dtype("<f8"), torch.float64),
    "F32": (4, np.dtype("<f4"), torch.float32),
    "F16": (2, np.dtype("<f2"), torch.float16),
    "BF16": (2, None, torch.bfloat16),
    "I64": (8, np.dtype("<i8"), torch.int64),
    "I32": (4, np.dtype("<i4"), torch.int32),
    "I16": (2, np.dtype("<i2"), torch.int16),
    "I8": (1, np.dtype("i1"), torch.int8),
    "U8": (1, np.dtype("u1"), torch.uint8),
    "BOOL": (1, np.dtype("?"), torch.bool),
    # torch 1.13 has no unsigned 16/32/64-bit dtypes: they are read and widened
    # into the next signed type (U64 values >= 2**63 are rejected).
    "U16": (2, np.dtype("<u2"), torch.int32),
    "U32": (4, np.dtype("<u4"), torch.int64),
    "U64": (8, np.dtype("<u8"), torch.int64),
}

_TORCH_TO_TAG = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}

_NUMPY_TO_TAG = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
    np.dtype("uint16"): "U16", np.dtype("uint32"): "U32", np.dtype("uint64"): "U64",
}

# Refuse absurd headers before trying to allocate them (the reference library uses 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024


class LazyTensor(NamedTuple):
    """A tensor that is produced only when the writer reaches it.

    dtype: safetensors tag ("F32", "BF16", ...); shape: the logical shape;
    produce: zero-argument callable returning a numpy array or torch tensor of exactly
    that shape (it is converted to `dtype` on the fly).
    """
    dtype: str
    shape: Sequence[int]
    produce: Callable[[], object]


def dtype_tag(value) -> str:
    """The safetensors dtype tag of a numpy array / torch tensor / LazyTensor."""
    if isinstance(value, LazyTensor):
        if value.dtype not in _DTYPES:
            raise ValueError(f"unsupported safetensors dtype {value.dtype!r}")
        return value.dtype
    if isinstance(value, torch.Tensor):
        if value.dtype not in _TORCH_TO_TAG:
            raise ValueError(f"unsupported torch dtype {value.dtype}")
        return _TORCH_TO_TAG[value.dtype]
    arr = np.asarray(value)
    if arr.dtype.newbyteorder("=") not in _NUMPY_TO_TAG:
        raise ValueError(f"unsupported numpy dtype {arr.dtype}")
    return _NUMPY_TO_TAG[arr.dtype.newbyteorder("=")]


def _to_bytes(value, tag: str, shape: Sequence[int]) -> bytes:
    """Little-endian row-major bytes of `value` converted to dtype `tag`."""
    itemsize, np_dt, torch_dt = _DTYPES[tag]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"tensor shape {tuple(t.shape)} != declared {tuple(shape)}")
        if tag == "BF16":
            raw = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
            return raw.astype("<i2", copy=False).tobytes()
        if t.dtype == torch.bfloat16:
            t = t.float()
        arr = t.contiguous().numpy()
    else:
        arr = np.asarray(value)
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"array shape {tuple(arr.shape)} != declared {tuple(shape)}")
        if tag == "BF16":
            raw = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            return raw.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    return np.ascontiguousarray(arr, dtype=np_dt).tobytes()


def _shape_of(value) -> list:
    if isinstance(value, LazyTensor):
        return [int(s) for s in value.shape]
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    return list(np.asarray(value).shape)


def write_safetensors(path: str, tensors: Mapping[str, object],
                      metadata: Optional[Mapping[str, str]] = None) -> int:
    """Write `tensors` (name -> numpy array | torch tensor | LazyTensor) to `path`.

    Tensors are stored in sorted-name order, contiguous, data region 8-byte aligned.
    The file is written to `path + ".tmp"` and renamed into place at the end, so a
    reader never sees a half-written file. Returns the file size in bytes.
    """
    names = sorted(tensors)
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("safetensors __metadata__ must map str -> str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    plan = []
    for name in names:
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        value = tensors[name]
        tag = dtype_tag(value)
        shape = _shape_of(value)
        nbytes = _DTYPES[tag][0] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": tag, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        plan.append((name, tag, shape, nbytes))
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # pad with spaces so that 8 + len(header) is a multiple of 8
    hjson += b" " * ((-(8 + len(hjson))) % 8)

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, tag, shape, nbytes in plan:
            value = tensors[name]
            if isinstance(value, LazyTensor):
                value = value.produce()
            data = _to_bytes(value, tag, shape)
            if len(data) != nbytes:
                raise ValueError(f"{name}: produced {len(data)} bytes, expected {nbytes}")
            f.write(data)
            del data, value
    os.replace(tmp, path)
    return 8 + len(hjson) + offset


def read_safetensors_header(path: str):
    """Parse and validate the header. Returns (header_dict_without_metadata, metadata, data_start, data_len)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size < 8:
        raise ValueError(f"{path}: file is {size} bytes, too short for the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n < 2:
            raise ValueError(f"{path}: header length {n} is too small for a JSON object")
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise ValueError(f"{path}: header length {n} runs past the end of the {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header JSON is not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"{path}: __metadata__ must be an object of string -> string")
    data_start = 8 + n
    data_len = size - data_start
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise ValueError(f"{where}: entry is not an object")
        tag = info.get("dtype")
        if tag not in _DTYPES:
            raise ValueError(f"{where}: unsupported dtype {tag!r}")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        offs = info.get("data_offsets")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise ValueError(f"{where}: data_offsets {offs!r} is not [begin, end]")
        b, e = offs
        if not (0 <= b <= e <= data_len):
            raise ValueError(f"{where}: data_offsets [{b}, {e}] outside the data region of {data_len} bytes")
        expect = _DTYPES[tag][0] * int(np.prod(shape, dtype=np.int64))
        if e - b != expect:
            raise ValueError(f"{where}: {e - b} bytes for dtype {tag} shape {shape}, expected {expect}")
    return header, metadata, data_start, data_len


def read_safetensors(path: str, strict: bool = True, return_metadata: bool = False):
    """Read every tensor of `path` into a dict name -> torch.Tensor (on CPU).

    strict=True additionally requires the data region to be exactly covered by the
    tensors without overlaps, holes or trailing bytes (as the reference library does).
    Overlapping tensors are always rejected.
    """
    header, metadata, data_start, data_len = read_safetensors_header(path)
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name)
                   for name, info in header.items())
    pos = 0
    for b, e, name in spans:
        if b < pos:
            raise ValueError(f"{path}: tensor {name!r} at [{b}, {e}] overlaps the previous tensor (ends at {pos})")
        if strict and b != pos:
            raise ValueError(f"{path}: {b - pos}-byte hole before tensor {name!r}")
        pos = max(pos, e)
    if strict and pos != data_len:
        raise ValueError(f"{path}: {data_len - pos} unused bytes after the last tensor")

    out: Dict[str, torch.Tensor] = {}
    # Plain reads (not a memmap) so that only the tensors themselves stay resident.
    with open(path, "rb") as f:
        for name, info in header.items():
            tag, shape = info["dtype"], info["shape"]
            b, e = info["data_offsets"]
            itemsize, np_dt, torch_dt = _DTYPES[tag]
            f.seek(data_start + b)
            count = (e - b) // itemsize
            if tag == "BF16":
                raw16 = np.fromfile(f, dtype="<u2", count=count)
                if raw16.size != count:
                    raise ValueError(f"{path}: tensor {name!r}: short read")
                bits = raw16.astype(np.uint32) << 16      # bf16 = the top half of an f32
                t = torch.from_numpy(bits.view(np.float32)).to(torch.bfloat16)
            else:
                arr = np.fromfile(f, dtype=np_dt, count=count)
                if arr.size != count:
                    raise ValueError(f"{path}: tensor {name!r}: short read")
                if tag == "U64" and arr.size and arr.max() >= 2 ** 63:
                    raise ValueError(f"{path}: tensor {name!r}: U64 value does not fit torch.int64")
                if tag in ("U16", "U32", "U64"):
                    arr = arr.astype(np.int32 if tag == "U16" else np.int64)
                if arr.dtype.byteorder == ">":            # only on big-endian hosts
                    arr = arr.astype(arr.dtype.newbyteorder("="))
                t = torch.from_numpy(arr)
                if t.dtype != torch_dt:
                    t = t.to(torch_dt)
            out[name] = t.reshape(shape)
    if return_metadata:
        return out, (metadata or {})
    return out
