//! tokio-postgres client test for pg_imgsim. Prints `PASS ...` / `FAIL ...: why` / `SKIP ...` lines and
//! exits with status 1 when anything failed.
//!
//! `Embedding` below doubles as an example for users: `ToSql`/`FromSql` over the binary protocol (the layout
//! of pgvector's `vector`: int16 dims, int16 unused = 0, then dims float32, all big-endian), and the
//! pgvector-style text form `[1,2.5,-0.03]` for the text protocol (`simple_query`).
//!
//! Connection: `DATABASE_URL` (a libpq URL or key=value string), or the libpq variables PGHOST, PGPORT,
//! PGUSER, PGPASSWORD, PGDATABASE. Photos for the img_embed part: `PG_IMGSIM_PHOTOS` (default:
//! `<repo>/.cache/data/gcompris`).

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

type BoxError = Box<dyn Error + Sync + Send>;

/// A pg_imgsim `embedding` value (also reads pgvector's `vector`, which has the same wire format).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// The text form, e.g. `[1,2.5,-0.03]` (Rust's shortest round-trip formatting of each float4).
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|v| format!("{v}")).collect();
        format!("[{}]", parts.join(","))
    }

    /// Parses the text form the server prints (or any pgvector-style literal).
    pub fn parse_text(s: &str) -> Result<Self, BoxError> {
        let body = s
            .trim()
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .ok_or_else(|| format!("not an embedding literal: {s:?}"))?;
        if body.trim().is_empty() {
            return Ok(Embedding(Vec::new()));
        }
        let values = body
            .split(',')
            .map(|x| x.trim().parse::<f32>())
            .collect::<Result<Vec<f32>, _>>()?;
        Ok(Embedding(values))
    }
}

impl ToSql for Embedding {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let dims =
            i16::try_from(self.0.len()).map_err(|_| "too many dimensions for an embedding")?;
        out.reserve(4 + 4 * self.0.len());
        out.put_i16(dims);
        out.put_i16(0);
        for v in &self.0 {
            out.put_f32(*v);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.name(), "embedding" | "vector")
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Embedding {
    fn from_sql(_ty: &Type, mut raw: &'a [u8]) -> Result<Self, BoxError> {
        if raw.len() < 4 {
            return Err("embedding value shorter than its header".into());
        }
        let dims = raw.get_i16();
        let unused = raw.get_i16();
        if dims < 0 || unused != 0 || raw.len() != 4 * dims as usize {
            return Err(format!("bad embedding value: {dims} dims, {} bytes", raw.len()).into());
        }
        Ok(Embedding((0..dims).map(|_| raw.get_f32()).collect()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.name(), "embedding" | "vector")
    }
}

/// PASS/FAIL/SKIP bookkeeping.
#[derive(Default)]
struct Report {
    fails: usize,
}

impl Report {
    fn check(&mut self, name: &str, result: Result<(), BoxError>) {
        match result {
            Ok(()) => println!("PASS rust: {name}"),
            Err(e) => {
                self.fails += 1;
                println!("FAIL rust: {name}: {}", one_line(&e.to_string()));
            }
        }
    }

    fn skip(&self, name: &str, why: &str) {
        println!("SKIP rust: {name}: {why}");
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), BoxError> {
    if cond {
        Ok(())
    } else {
        Err(why().into())
    }
}

fn config_from_env() -> Result<Config, BoxError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url.parse::<Config>()?);
    }
    let mut cfg = Config::new();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    cfg.host(var("PGHOST").as_deref().unwrap_or("/var/run/postgresql"));
    if let Some(p) = var("PGPORT") {
        cfg.port(p.parse()?);
    }
    let user = var("PGUSER")
        .or_else(|| var("USER"))
        .unwrap_or_else(|| "postgres".into());
    cfg.user(&user);
    if let Some(p) = var("PGPASSWORD") {
        cfg.password(p);
    }
    cfg.dbname(var("PGDATABASE").as_deref().unwrap_or(&user));
    Ok(cfg)
}

/// Small deterministic generator (no rand crate): xorshift64*, values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Embedding {
        Embedding((0..n).map(|_| self.next_f32()).collect())
    }
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

async fn simple_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, BoxError> {
    let mut out = Vec::new();
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = msg {
            out.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    Ok(out)
}

async fn connect() -> Result<Client, BoxError> {
    let cfg = config_from_env()?;
    let mut last: Option<BoxError> = None;
    // CREATE EXTENSION may fail for a moment while the extension is being reinstalled: retry.
    for _ in 0..10 {
        match cfg.connect(NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        eprintln!("connection error: {e}");
                    }
                });
                match client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
                    .await
                {
                    Ok(()) => return Ok(client),
                    Err(e) => last = Some(e.into()),
                }
            }
            Err(e) => last = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Err(last.unwrap_or_else(|| "could not connect".into()))
}

async fn exists(client: &Client, sql: &str) -> Result<bool, BoxError> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

async fn run(r: &mut Report) -> Result<(), BoxError> {
    let client = connect().await?;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS rs_t, rs_k;
             CREATE TABLE rs_t (id int PRIMARY KEY, v embedding(3), w embedding);
             CREATE TABLE rs_k (id int PRIMARY KEY, v embedding(16));",
        )
        .await?;

    // binary protocol: parameters and results of prepared statements
    let rows_in: Vec<(i32, Option<Embedding>, Option<Embedding>)> = vec![
        (
            1,
            Some(Embedding(vec![1.0, 2.5, -0.03])),
            Some(Embedding(vec![0.5])),
        ),
        (2, Some(Embedding(vec![-1.5e-7, f32::MAX, -0.0])), None),
        (3, None, None),
    ];
    let res: Result<(), BoxError> = async {
        let ins = client
            .prepare("INSERT INTO rs_t VALUES ($1, $2, $3)")
            .await?;
        for (id, v, w) in &rows_in {
            client.execute(&ins, &[id, v, w]).await?;
        }
        let got: Vec<(i32, Option<Embedding>, Option<Embedding>)> = client
            .query("SELECT id, v, w FROM rs_t ORDER BY id", &[])
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        ensure(got == rows_in, || format!("read back {got:?}"))?;
        // bit-exact, including the sign of -0.0
        let v2: Embedding = client
            .query_one("SELECT v FROM rs_t WHERE id = 2", &[])
            .await?
            .get(0);
        ensure(v2.0[2].to_bits() == (-0.0f32).to_bits(), || {
            "-0.0 lost its sign".into()
        })
    }
    .await;
    r.check(
        "binary protocol: ToSql/FromSql round trip, NULLs, bit-exact float4",
        res,
    );

    let res: Result<(), BoxError> = async {
        let e = Embedding(vec![1.0, 2.5, -0.03, 7e-3]);
        let sent: Vec<u8> = client
            .query_one("SELECT embedding_send($1)", &[&e])
            .await?
            .get(0);
        let mut ours = BytesMut::new();
        e.to_sql(&Type::BYTEA, &mut ours)?;
        ensure(sent == ours.as_ref(), || {
            format!("server {sent:02x?} vs client {:02x?}", ours.as_ref())
        })
    }
    .await;
    r.check(
        "binary layout (int16 dims, int16 0, float4 BE) equals embedding_send",
        res,
    );

    // text protocol: simple_query sends and returns text
    let res: Result<(), BoxError> = async {
        client
            .simple_query("INSERT INTO rs_t (id, v) VALUES (10, '[1,2.5,-3e-2]')")
            .await?;
        let rows = simple_rows(
            &client,
            "SELECT v, w FROM rs_t WHERE id IN (1, 10) ORDER BY id",
        )
        .await?;
        let texts: Vec<Option<String>> = rows.iter().map(|r| r[0].clone()).collect();
        ensure(texts == vec![Some("[1,2.5,-0.03]".into()); 2], || {
            format!("text form {texts:?}")
        })?;
        ensure(rows[1][1].is_none(), || {
            "NULL did not come back as NULL".into()
        })?;
        let parsed = Embedding::parse_text(texts[0].as_deref().unwrap_or(""))?;
        let bin: Embedding = client
            .query_one("SELECT v FROM rs_t WHERE id = 10", &[])
            .await?
            .get(0);
        ensure(
            parsed == bin && bin == Embedding(vec![1.0, 2.5, -0.03]),
            || format!("text {parsed:?} vs binary {bin:?}"),
        )?;
        // the client's text form is read by the server as the same values
        let e = Embedding(vec![-1.5e-7, f32::MAX, 0.1, 123456.79]);
        let back = simple_rows(&client, &format!("SELECT '{}'::embedding", e.to_text())).await?;
        let back = Embedding::parse_text(back[0][0].as_deref().unwrap_or(""))?;
        ensure(back == e, || {
            format!("{} came back as {back:?}", e.to_text())
        })
    }
    .await;
    r.check("text protocol (simple_query): '[1,2.5,-3e-2]' in, '[1,2.5,-0.03]' out, same values as binary", res);

    let res: Result<(), BoxError> = async {
        match client
            .execute(
                "INSERT INTO rs_t (id, v) VALUES (20, $1)",
                &[&Embedding(vec![1.0; 4])],
            )
            .await
        {
            Ok(_) => Err("4 values went into embedding(3)".into()),
            Err(e) => ensure(
                e.to_string().contains("dimension") || format!("{e:?}").contains("dimension"),
                || format!("unexpected error {e:?}"),
            ),
        }
    }
    .await;
    r.check("embedding(3) rejects 4 dimensions", res);

    let res: Result<(), BoxError> = async {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (a, b) = (rng.vec(64), rng.vec(64));
        let row = client
            .query_one(
                "SELECT $1::embedding <-> $2::embedding, $1::embedding <=> $2::embedding, $1::embedding <#> $2::embedding",
                &[&a, &b],
            )
            .await?;
        let (d_l2, d_cos, d_nip): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
        let want_cos = 1.0 - dot(&a.0, &b.0) / (dot(&a.0, &a.0).sqrt() * dot(&b.0, &b.0).sqrt());
        ensure(
            close(d_l2, l2(&a.0, &b.0)) && close(d_cos, want_cos) && close(d_nip, -dot(&a.0, &b.0)),
            || format!("got {d_l2} {d_cos} {d_nip}"),
        )
    }
    .await;
    r.check(
        "<-> <=> <#> match L2, cosine distance and negative inner product computed here",
        res,
    );

    // insert, then an ORDER BY distance LIMIT k query
    let mut rng = Rng(42);
    let data: Vec<Embedding> = (0..500).map(|_| rng.vec(16)).collect();
    let query = rng.vec(16);
    let res: Result<(), BoxError> = async {
        client.batch_execute("BEGIN").await?;
        let ins = client.prepare("INSERT INTO rs_k VALUES ($1, $2)").await?;
        for (i, e) in data.iter().enumerate() {
            client.execute(&ins, &[&(i as i32), e]).await?;
        }
        client.batch_execute("COMMIT").await?;
        let got: Vec<(i32, f64)> = client
            .query(
                "SELECT id, v <-> $1 FROM rs_k ORDER BY v <-> $1 LIMIT 5",
                &[&query],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut want: Vec<(usize, f64)> = data
            .iter()
            .enumerate()
            .map(|(i, e)| (i, l2(&e.0, &query.0)))
            .collect();
        want.sort_by(|x, y| x.1.total_cmp(&y.1));
        let ok = got.len() == 5
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 as usize == w.0 && close(g.1, w.1));
        ensure(ok, || format!("got {got:?}, want {:?}", &want[..5]))
    }
    .await;
    r.check(
        "500 rows inserted; ORDER BY v <-> $1 LIMIT 5 = exact top 5 computed here",
        res,
    );

    let res: Result<(), BoxError> = async {
        let arr: Vec<Option<Embedding>> = client
            .query_one(
                "SELECT ARRAY[$1::embedding, NULL, $2::embedding]",
                &[&data[0], &data[1]],
            )
            .await?
            .get(0);
        ensure(
            arr == vec![Some(data[0].clone()), None, Some(data[1].clone())],
            || format!("got {arr:?}"),
        )
    }
    .await;
    r.check("embedding[] reads as Vec<Option<Embedding>>", res);

    // ------------------------------------------------------------------ lsh (guarded)
    if !exists(
        &client,
        "SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'lsh')",
    )
    .await?
    {
        r.skip(
            "USING lsh index",
            "index access method lsh not in this server yet",
        );
    } else {
        let res: Result<(), BoxError> = async {
            client
                .batch_execute(
                    "CREATE INDEX rs_k_lsh ON rs_k USING lsh (v embedding_l2_ops);
                     SET enable_seqscan = off; SET lsh.probes = 4;",
                )
                .await?;
            let plan = simple_rows(
                &client,
                &format!(
                    "EXPLAIN SELECT id FROM rs_k ORDER BY v <-> '{}' LIMIT 5",
                    data[42].to_text()
                ),
            )
            .await?;
            let plan: Vec<String> = plan.into_iter().filter_map(|r| r[0].clone()).collect();
            ensure(plan.iter().any(|l| l.contains("rs_k_lsh")), || {
                format!("plan {plan:?}")
            })?;
            let ids: Vec<i32> = client
                .query(
                    "SELECT id FROM rs_k ORDER BY v <-> $1 LIMIT 5",
                    &[&data[42]],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            client.batch_execute("RESET enable_seqscan").await?;
            ensure(ids.len() == 5 && ids[0] == 42, || {
                format!("lsh top 5 for row 42's vector: {ids:?}")
            })
        }
        .await;
        r.check(
            "CREATE INDEX ... USING lsh: EXPLAIN uses it; a stored vector finds its own row",
            res,
        );
    }

    // ------------------------------------------------------------------ img_embed (guarded)
    let photos_dir = std::env::var_os("PG_IMGSIM_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../.cache/data/gcompris")
        });
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&photos_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "webp" || x == "jpg" || x == "png")
        })
        .collect();
    photos.sort();
    photos.truncate(3);
    if !exists(
        &client,
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed')",
    )
    .await?
    {
        r.skip(
            "img_embed(bytea) over tokio-postgres",
            "function img_embed not in this server yet",
        );
    } else if photos.is_empty() {
        r.check(
            "img_embed(bytea) over tokio-postgres",
            Err(format!("no photos under {}", photos_dir.display()).into()),
        );
    } else {
        let bytes: Vec<Vec<u8>> = photos.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let res: Result<(), BoxError> = async {
            let e: Embedding = client
                .query_one("SELECT img_embed($1)", &[&bytes[0]])
                .await?
                .get(0);
            ensure(!e.0.is_empty() && e.0.iter().all(|v| v.is_finite()), || {
                format!("{} values", e.0.len())
            })?;
            let again: Embedding = client
                .query_one("SELECT img_embed($1)", &[&bytes[0]])
                .await?
                .get(0);
            ensure(e == again, || "two calls on the same photo differ".into())
        }
        .await;
        r.check("img_embed(bytea) -> Embedding (binary), deterministic", res);
        if !exists(
            &client,
            "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed_batch')",
        )
        .await?
        {
            r.skip(
                "img_embed_batch over tokio-postgres",
                "function img_embed_batch not in this server yet",
            );
        } else {
            let res: Result<(), BoxError> = async {
                let model = std::env::var("PG_IMGSIM_MODEL")
                    .unwrap_or_else(|_| "efficientnet_lite0".into());
                let batch: Vec<Embedding> = client
                    .query_one("SELECT img_embed_batch($1, $2)", &[&bytes, &model])
                    .await?
                    .get(0);
                ensure(batch.len() == bytes.len(), || {
                    format!("{} results for {} photos", batch.len(), bytes.len())
                })?;
                for (b, p) in batch.iter().zip(&bytes) {
                    let one: Embedding = client
                        .query_one("SELECT img_embed($1, $2)", &[p, &model])
                        .await?
                        .get(0);
                    let worst =
                        b.0.iter()
                            .zip(&one.0)
                            .map(|(x, y)| (x - y).abs())
                            .fold(0.0f32, f32::max);
                    ensure(b.0.len() == one.0.len() && worst < 1e-3, || {
                        format!("batch differs by {worst}")
                    })?;
                }
                Ok(())
            }
            .await;
            r.check(
                "img_embed_batch(bytea[], model) -> Vec<Embedding> = one by one",
                res,
            );
        }
    }

    client
        .batch_execute("DROP TABLE IF EXISTS rs_t, rs_k")
        .await?;
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = Report::default();
    if let Err(e) = rt.block_on(run(&mut report)) {
        report.fails += 1;
        println!("FAIL rust: setup: {}", one_line(&e.to_string()));
    }
    std::process::exit(i32::from(report.fails > 0));
}
