"""SQLAlchemy 2 column type for pg_imgsim's ``embedding`` (usable as an example by users).

    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
    from pg_imgsim_sqlalchemy import Embedding

    class Photo(Base):
        __tablename__ = "photos"
        id: Mapped[int] = mapped_column(primary_key=True)
        photo: Mapped[bytes] = mapped_column(LargeBinary)
        emb: Mapped[list[float] | None] = mapped_column(Embedding(1280))

    q = [0.1] * 1280                                     # or an SQL expression: func.img_embed(...)
    session.scalars(select(Photo).order_by(Photo.emb.l2_distance(q)).limit(5))

Comparator methods (ascending = most similar first):
  l2_distance(other)        emb <-> other   Euclidean distance
  cosine_distance(other)    emb <=> other   1 - cosine similarity
  max_inner_product(other)  emb <#> other   negative inner product (ascending = largest inner product)
``other`` is a list/tuple/numpy array of floats (bound as an ``embedding`` parameter) or any SQL expression
of type embedding (a column, ``func.img_embed(...)``). Values travel in the text form ``[1,2.5,-0.03]``,
so the type works with any DB-API driver (psycopg, psycopg2, asyncpg's text mode, pg8000).
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Sequence

from sqlalchemy import Float, cast, literal
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType


def _to_text(values: Sequence[float]) -> str:
    out = []
    for x in values:
        r = repr(float(x))
        out.append(r[:-2] if r.endswith(".0") else r)
    return "[" + ",".join(out) + "]"


def _from_db(value: Any) -> Optional[list[float]]:
    if value is None:
        return None
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode()
    if isinstance(value, str):
        body = value.strip()[1:-1].strip()
        vals = [float(x) for x in body.split(",")] if body else []
        # round to float4 as the server stores them (the text form is the shortest float4 text)
        return list(struct.unpack(f"={len(vals)}f", struct.pack(f"={len(vals)}f", *vals)))
    # a driver-level adapter (e.g. pg_imgsim_psycopg.register_embedding) already decoded it
    return [float(x) for x in value]


class Embedding(UserDefinedType):
    """``embedding`` or ``embedding(dims)``; Python side: ``list[float]``."""

    cache_ok = True

    def __init__(self, dims: Optional[int] = None):
        self.dims = dims

    def get_col_spec(self, **kw: Any) -> str:
        return "EMBEDDING" if self.dims is None else f"EMBEDDING({int(self.dims)})"

    def bind_processor(self, dialect: Any):
        dims = self.dims

        def process(value: Any) -> Optional[str]:
            if value is None or isinstance(value, str):
                return value
            if dims is not None and len(value) != dims:
                raise ValueError(f"expected {dims} dimensions, not {len(value)}")
            return _to_text(value)

        return process

    def literal_processor(self, dialect: Any):
        def process(value: Any) -> str:
            return "'" + _to_text(value) + "'"

        return process

    def bind_expression(self, bindvalue: Any) -> ColumnElement:
        # The driver sends text; an explicit cast makes the server parse it as embedding in any context.
        return cast(bindvalue, _BareEmbedding())

    def result_processor(self, dialect: Any, coltype: Any):
        return _from_db

    class comparator_factory(UserDefinedType.Comparator):
        def _other(self, other: Any) -> Any:
            if isinstance(other, ColumnElement):
                return other
            # a bound parameter of type Embedding: text form + CAST (see bind_expression)
            return literal(other, type_=Embedding())

        def l2_distance(self, other: Any) -> ColumnElement[float]:
            return self.op("<->", return_type=Float)(self._other(other))

        def cosine_distance(self, other: Any) -> ColumnElement[float]:
            return self.op("<=>", return_type=Float)(self._other(other))

        def max_inner_product(self, other: Any) -> ColumnElement[float]:
            return self.op("<#>", return_type=Float)(self._other(other))


class _BareEmbedding(UserDefinedType):
    """The cast target (``::EMBEDDING``) with no bind/result processing of its own."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "EMBEDDING"

    def result_processor(self, dialect: Any, coltype: Any):
        return _from_db
