"""SQLAlchemy 2 ORM against pg_imgsim: the Embedding(dims) column type (pg_imgsim_sqlalchemy), inserts,
similarity queries through the comparator methods; with img_embed and the lsh index access method when the
server has them (SKIP otherwise).

Connection: libpq environment variables (PGHOST, PGPORT, ...) or DATABASE_URL
(postgresql+psycopg://...). Prints PASS/FAIL/SKIP lines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import MODEL, Report, connect_retry, gcompris_split  # noqa: E402
from pg_imgsim_sqlalchemy import Embedding  # noqa: E402

r = Report("sqlalchemy")
DIMS = 8
N = 300


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "sa_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
    photo: Mapped[bytes] = mapped_column(sa.LargeBinary)
    emb: Mapped[Optional[list[float]]] = mapped_column(Embedding(DIMS))


class RealPhoto(Base):
    """Real photos, embedded in the database by img_embed (dimension fixed by the model)."""

    __tablename__ = "sa_real_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    cls: Mapped[str] = mapped_column(sa.Text)
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
    photo: Mapped[bytes] = mapped_column(sa.LargeBinary)
    emb: Mapped[Optional[list[float]]] = mapped_column(Embedding())


url = os.environ.get("DATABASE_URL", "postgresql+psycopg://")
if url.startswith("postgresql://"):
    url = "postgresql+psycopg://" + url[len("postgresql://"):]
engine = sa.create_engine(url)


def setup():
    with engine.begin() as c:
        c.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
        Base.metadata.drop_all(c)
        Base.metadata.create_all(c)


connect_retry(setup)
rng = np.random.default_rng(7)
data = rng.standard_normal((N, DIMS)).astype(np.float32)
data[:, 0] = np.abs(data[:, 0])  # some structure; no ties


def ddl_typmod():
    with engine.connect() as c:
        t = c.exec_driver_sql(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'sa_photos'::regclass AND attname = 'emb'"
        ).scalar_one()
    return None if t == f"embedding({DIMS})" else f"column type {t}"


r.run(f"create_all makes emb embedding({DIMS})", ddl_typmod)


def insert_rows():
    with Session(engine) as s, s.begin():
        s.add_all(
            Photo(id=i, path=f"synthetic/{i}.bin", photo=bytes([i % 256]) * 16, emb=[float(x) for x in data[i]])
            for i in range(N)
        )
    with Session(engine) as s:
        got = s.scalars(sa.select(Photo).order_by(Photo.id)).all()
    if len(got) != N:
        return f"{len(got)} rows"
    bad = [p.id for p in got if p.emb != [float(x) for x in data[p.id]] or p.photo != bytes([p.id % 256]) * 16]
    return f"rows {bad[:5]} differ" if bad else None


r.run(f"ORM insert of {N} photos (bytea + embedding) reads back bit-exact", insert_rows)

q = rng.standard_normal(DIMS).astype(np.float32)
d64, q64 = data.astype(np.float64), q.astype(np.float64)
exact = {
    "l2_distance": np.linalg.norm(d64 - q64, axis=1),
    "cosine_distance": 1 - d64 @ q64 / np.linalg.norm(d64, axis=1) / np.linalg.norm(q64),
    "max_inner_product": -(d64 @ q64),
}

for method, dist in exact.items():

    def topk(method=method, dist=dist):
        want = list(np.argsort(dist, kind="stable")[:5])
        with Session(engine) as s:
            col = getattr(Photo.emb, method)
            ids = s.scalars(sa.select(Photo.id).order_by(col([float(x) for x in q])).limit(5)).all()
            rows = s.execute(
                sa.select(Photo.id, col(q).label("d")).order_by(col(q)).limit(5)  # numpy query vector
            ).all()
        if ids != want:
            return f"ids {ids}, want {want}"
        dd = [d for _, d in rows]
        if [i for i, _ in rows] != want or not np.allclose(dd, dist[want], rtol=1e-5, atol=1e-6):
            return f"distances {dd}, want {list(dist[want])}"
        return None

    r.run(f"order_by(Photo.emb.{method}(q)).limit(5) = numpy's exact top 5", topk)


def subquery_other():
    with Session(engine) as s:
        e17 = sa.select(Photo.emb).where(Photo.id == 17).scalar_subquery()
        rows = s.execute(sa.select(Photo.id, Photo.emb.l2_distance(e17)).order_by(Photo.emb.l2_distance(e17)).limit(2)).all()
    return None if rows[0][0] == 17 and rows[0][1] == 0 and rows[1][1] > 0 else f"rows {rows}"


r.run("comparator takes an SQL expression (scalar subquery): row 17 nearest to itself", subquery_other)


def dims_checked():
    with Session(engine) as s:
        s.add(Photo(id=N + 1, path="bad", photo=b"", emb=[1.0] * (DIMS - 1)))
        try:
            s.flush()
        except sa.exc.StatementError as e:
            return None if "dimensions" in str(e) else f"unexpected error {e}"
    return "7 values went into Embedding(8)"


r.run("Embedding(8) refuses 7 values", dims_checked)


def literal_binds():
    stmt = sa.select(Photo.id).order_by(Photo.emb.l2_distance([1, 2.5, -0.03] + [0.0] * (DIMS - 3))).limit(1)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    if "'[1,2.5,-0.03,0,0,0,0,0]'" not in sql or "<->" not in sql:
        return f"compiled SQL {sql!r}"
    with engine.connect() as c:
        c.exec_driver_sql(sql).scalar_one()
    return None


r.run("literal_binds compilation renders '[1,2.5,-0.03,...]' and runs", literal_binds)

# ---------------------------------------------------------------- lsh index (guarded)
with engine.connect() as c:
    has_lsh = c.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'lsh')").scalar_one()
    has_embed = c.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed')").scalar_one()


def explain(c: sa.Connection, stmt: sa.Select) -> str:
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    return "\n".join(row[0] for row in c.exec_driver_sql("EXPLAIN " + sql))


if not has_lsh:
    r.skip("USING lsh index on an ORM table", "index access method lsh not in this server yet")
else:

    def lsh_synthetic():
        idx = sa.Index("sa_photos_emb_lsh", Photo.emb, postgresql_using="lsh", postgresql_ops={"emb": "embedding_l2_ops"})
        with engine.begin() as c:
            idx.create(c)
            c.exec_driver_sql("SET LOCAL enable_seqscan = off")
            stmt = sa.select(Photo.id).order_by(Photo.emb.l2_distance([float(x) for x in data[42]])).limit(5)
            plan = explain(c, stmt)
            ids = c.execute(stmt).scalars().all()
        if "sa_photos_emb_lsh" not in plan:
            return f"plan does not use the index: {plan!r}"
        return None if ids and ids[0] == 42 and len(ids) == 5 else f"lsh top 5 for row 42's own vector: {ids}"

    r.run("Index(postgresql_using='lsh'): EXPLAIN uses it; a stored vector finds its own row", lsh_synthetic)

# ---------------------------------------------------------------- real photos through img_embed (guarded)
loaded, held = gcompris_split(1)
if not has_embed:
    r.skip("ORM similarity over real photos (img_embed)", "function img_embed not in this server yet")
elif not loaded:
    r.fail("ORM similarity over real photos (img_embed)", "no photos (scripts/install-deps.sh makes .cache/data/gcompris)")
else:

    def real_photos():
        with Session(engine) as s, s.begin():
            s.add_all(RealPhoto(cls=c, path=str(p), photo=p.read_bytes()) for c, p in loaded)
            s.flush()
            s.execute(sa.update(RealPhoto).values(emb=sa.func.img_embed(RealPhoto.photo, MODEL)))
        hits, total, lines = 0, 0, []
        with Session(engine) as s:
            for c, p in held:
                q_expr = sa.func.img_embed(sa.literal(p.read_bytes(), sa.LargeBinary), MODEL)
                got = s.execute(
                    sa.select(RealPhoto.cls, RealPhoto.emb.l2_distance(q_expr).label("d"))
                    .order_by(RealPhoto.emb.l2_distance(q_expr))
                    .limit(5)
                ).all()
                hits += sum(1 for g, _ in got if g == c)
                total += len(got)
                lines.append(f"{p.name}->{[g for g, _ in got]}")
                if [d for _, d in got] != sorted(d for _, d in got):
                    return f"distances not ascending for {p.name}"
            # a stored photo queried with its own bytes is its own nearest neighbour at distance ~0
            me = s.scalars(sa.select(RealPhoto).order_by(RealPhoto.id).limit(1)).one()
            q_expr = sa.func.img_embed(sa.literal(me.photo, sa.LargeBinary), MODEL)
            top = s.execute(
                sa.select(RealPhoto.id, RealPhoto.emb.l2_distance(q_expr)).order_by(RealPhoto.emb.l2_distance(q_expr)).limit(1)
            ).one()
        if top[0] != me.id or top[1] > 1e-3:
            return f"self query gave {top}"
        p5 = hits / max(total, 1)
        print(f"  real photos: {len(loaded)} loaded, {len(held)} held-out queries, precision@5 {p5:.2f}", flush=True)
        return None if total == 5 * len(held) and p5 >= 0.6 else f"precision@5 {p5:.2f} over {lines}"

    r.run(f"ORM: img_embed({len(loaded)} real photos) then order_by(emb.l2_distance(img_embed(q))), same-class @5 >= 0.6",
          real_photos)

    if has_lsh:

        def real_lsh():
            idx = sa.Index("sa_real_emb_lsh", RealPhoto.emb, postgresql_using="lsh",
                           postgresql_ops={"emb": "embedding_l2_ops"})
            with engine.begin() as c:
                idx.create(c)
                c.exec_driver_sql("SET LOCAL enable_seqscan = off")
                me = c.execute(sa.select(RealPhoto.id, RealPhoto.emb).order_by(RealPhoto.id).limit(1)).one()
                stmt = sa.select(RealPhoto.id).order_by(RealPhoto.emb.l2_distance(me.emb)).limit(5)
                plan = explain(c, stmt)
                ids = c.execute(stmt).scalars().all()
            if "sa_real_emb_lsh" not in plan:
                return f"plan does not use the index: {plan!r}"
            return None if ids and ids[0] == me.id else f"lsh top 5 {ids}, want {me.id} first"

        r.run("real photos with a USING lsh index: EXPLAIN uses it, a photo finds itself", real_lsh)

with engine.begin() as c:
    Base.metadata.drop_all(c)
r.exit()
