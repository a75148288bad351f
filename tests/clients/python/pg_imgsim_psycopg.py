"""psycopg 3 adapters for pg_imgsim's ``embedding`` type (usable as an example by users).

    import psycopg
    from pg_imgsim_psycopg import Embedding, register_embedding

    conn = psycopg.connect("dbname=photos")
    register_embedding(conn)                      # once per connection (or per cursor/context)
    conn.execute("INSERT INTO t (v) VALUES (%s)", [Embedding([1, 2.5, -0.03])])
    row = conn.execute("SELECT v FROM t").fetchone()   # -> [1.0, 2.5, -0.03...] (list of float)

Wire formats (the same as pgvector's ``vector``):
  text   ``[1,2.5,-0.03]``
  binary int16 dims, int16 unused (0), then dims float32, all big-endian.

Python values dumped as ``embedding``: :class:`Embedding` (a list of floats, to keep plain Python lists
dumped as PostgreSQL arrays) and, when numpy is importable, float ``numpy.ndarray`` of one dimension.
Loaded values are ``list[float]`` by default, ``numpy.ndarray`` (float32) with ``numpy=True``.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, Sequence

import psycopg
from psycopg import adapt
from psycopg.pq import Format
from psycopg.types import TypeInfo

try:  # numpy is optional
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

_HEADER = struct.Struct(">hh")


class Embedding(list):
    """A list of floats that psycopg dumps as ``embedding`` (not as a ``real[]`` array)."""

    def __init__(self, values: Iterable[float] = ()):
        super().__init__(float(x) for x in values)

    def __repr__(self) -> str:
        return f"Embedding({list.__repr__(self)})"


def _fmt(x: float) -> str:
    # repr() of a Python float is the shortest text that round-trips it; the server parses it into float4.
    r = repr(float(x))
    if r in ("nan", "inf", "-inf"):
        raise ValueError(f"embedding values must be finite, got {r}")
    return r[:-2] if r.endswith(".0") else r


def to_text(values: Sequence[float]) -> str:
    """pgvector-style text form ``[1,2.5,-0.03]``."""
    return "[" + ",".join(_fmt(x) for x in values) + "]"


def from_text(text: str | bytes | memoryview) -> list[float]:
    if not isinstance(text, str):
        text = bytes(text).decode()
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError(f"not an embedding literal: {text!r}")
    body = s[1:-1].strip()
    vals = [float(x) for x in body.split(",")] if body else []
    # round to float4 like the server did, so that text and binary loads give the same Python floats
    return list(struct.unpack(f"={len(vals)}f", struct.pack(f"={len(vals)}f", *vals)))


def to_binary(values: Sequence[float]) -> bytes:
    n = len(values)
    if _np is not None and isinstance(values, _np.ndarray):
        return _HEADER.pack(n, 0) + values.astype(">f4", copy=False).tobytes()
    return _HEADER.pack(n, 0) + struct.pack(f">{n}f", *values)


def from_binary(data: bytes | memoryview) -> list[float]:
    dims, unused = _HEADER.unpack_from(data, 0)
    if unused != 0 or len(data) != 4 + 4 * dims:
        raise ValueError(f"bad embedding binary value ({len(data)} bytes for {dims} dims)")
    return list(struct.unpack_from(f">{dims}f", data, 4))


def register_embedding(context: Any, numpy: bool = False) -> TypeInfo:
    """Registers dumpers and loaders for ``embedding`` (and ``embedding[]``) on a connection or cursor.

    Raises psycopg.ProgrammingError when the extension is not installed in the connected database.
    """
    conn = context if isinstance(context, psycopg.Connection) else context.connection
    info = TypeInfo.fetch(conn, "embedding")
    if info is None:
        raise psycopg.ProgrammingError("type embedding not found: CREATE EXTENSION pg_imgsim first")
    info.register(context)  # makes the name usable in COPY set_types() and registers embedding[]
    adapters = context.adapters
    oid = info.oid

    class TextDumper(adapt.Dumper):
        format = Format.TEXT

        def dump(self, obj: Sequence[float]) -> bytes:
            return to_text(obj).encode()

    class BinaryDumper(adapt.Dumper):
        format = Format.BINARY

        def dump(self, obj: Sequence[float]) -> bytes:
            return to_binary(obj)

    TextDumper.oid = BinaryDumper.oid = oid

    if numpy:
        if _np is None:
            raise ImportError("numpy=True needs numpy")

        def _conv(v: list[float]) -> Any:
            return _np.asarray(v, dtype=_np.float32)

        class TextLoader(adapt.Loader):
            format = Format.TEXT

            def load(self, data: bytes) -> Any:
                return _conv(from_text(data))

        class BinaryLoader(adapt.Loader):
            format = Format.BINARY

            def load(self, data: bytes) -> Any:
                dims = _HEADER.unpack_from(data, 0)[0]
                return _np.frombuffer(bytes(data), dtype=">f4", count=dims, offset=4).astype(_np.float32)

    else:

        class TextLoader(adapt.Loader):  # type: ignore[no-redef]
            format = Format.TEXT

            def load(self, data: bytes) -> Any:
                return from_text(data)

        class BinaryLoader(adapt.Loader):  # type: ignore[no-redef]
            format = Format.BINARY

            def load(self, data: bytes) -> Any:
                return from_binary(data)

    for cls in [Embedding] + ([_np.ndarray] if _np is not None else []):
        adapters.register_dumper(cls, TextDumper)
        adapters.register_dumper(cls, BinaryDumper)
    adapters.register_loader(oid, TextLoader)
    adapters.register_loader(oid, BinaryLoader)
    return info
