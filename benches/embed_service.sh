#!/usr/bin/env bash
# The inference service against the in-backend path (issue 13), side by side on this machine: N concurrent
# clients (pgbench, one connection each) calling single-image img_embed on real photos (the gcompris set from
# scripts/install-deps.sh, 64 of them in a table). Prints per N and mode: images/s, the cluster's memory
# (sum of the proportional set size of all its processes, sampled in the middle of the run), the threads of
# all its processes, and for the service its mean batch size.
#   bash benches/embed_service.sh [SECONDS per run, default 20] [CLIENTS, default "1 4 16"]
# Needs the extension installed for PG_MAJOR (default 15), release build: cargo pgrx install --release.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
secs=${1:-20}
clients=${2:-1 4 16}
. "$root/tests/sh/cluster.sh"
cluster_base

photos=$CLUSTER_BASE/photos
mkdir -p "$photos"
find "$root/.cache/data/gcompris" -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' \) | sort | head -64 |
  while read -r f; do cp "$f" "$photos/"; done
chmod -R a+rX "$photos"
[ "$(ls "$photos" | wc -l)" -ge 8 ] || { echo "no photos under .cache/data/gcompris (run scripts/install-deps.sh)"; exit 1; }

common=("shared_buffers = 128MB" "max_connections = 60" "log_min_messages = warning")
cluster_init backend "${common[@]}" || exit 1
cluster_init service "${common[@]}" "shared_preload_libraries = 'pg_imgsim'" || exit 1
for c in backend service; do
  cluster_start $c || { tail -5 "$(cluster_log $c)"; exit 1; }
  cluster_create_extension $c || exit 1
  cq $c -c "CREATE TABLE photos (id int PRIMARY KEY, img bytea)" \
        -c "INSERT INTO photos SELECT row_number() OVER (ORDER BY f), pg_read_binary_file('$photos/' || f) FROM pg_ls_dir('$photos') f" \
        -c "SELECT dims(img_embed(img)) FROM photos WHERE id = 1" >/dev/null || exit 1
done
n=$(cq backend -c "SELECT count(*) FROM photos")
cat >"$CLUSTER_BASE/embed.sql" <<SQL
\\set id random(1, $n)
SELECT dims(img_embed(img)) FROM photos WHERE id = :id;
SQL
chmod a+r "$CLUSTER_BASE/embed.sql"

# mem NAME: "<PSS MB> <threads>" summed over NAME's processes.
mem() {
  local p pss=0 thr=0 k t
  for p in $(cluster_children "$1"); do
    k=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
    t=$(awk '/^Threads:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    pss=$((pss + ${k:-0})); thr=$((thr + ${t:-0}))
  done
  echo "$((pss / 1024)) $thr"
}

echo "img_embed, $n real photos, ${secs} s per run, $(nproc) cores, PostgreSQL $("$PG_BIN/pg_config" --version | awk '{print $2}'), $(date -u +%F)"
printf '%-8s %4s %10s %10s %8s %11s\n' mode N "images/s" "PSS MB" threads "mean batch"
for N in $clients; do
  for c in backend service; do
    # A fresh set of connections per run (each backend loads its own session on the in-backend path).
    before=$(cq $c -c "SELECT coalesce(sum(batches), 0) || ' ' || coalesce(sum(images), 0) FROM imgsim_service_stats()")
    "$PG_BIN/pgbench" -h "$(cluster_sock $c)" -p "$(cluster_port $c)" -U postgres -n -f "$CLUSTER_BASE/embed.sql" \
      -c "$N" -j "$N" -T "$secs" postgres >"$CLUSTER_BASE/pgbench.$c.$N" 2>&1 &
    bench=$!
    sleep "$((secs * 2 / 3))"
    m=$(mem $c)
    wait $bench
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$CLUSTER_BASE/pgbench.$c.$N" | head -1)
    [ -n "$tps" ] || { echo "pgbench failed: $(tail -3 "$CLUSTER_BASE/pgbench.$c.$N")"; tps=0; }
    after=$(cq $c -c "SELECT coalesce(sum(batches), 0) || ' ' || coalesce(sum(images), 0) FROM imgsim_service_stats()")
    mb=$(echo "$before $after" | awk '{b = $3 - $1; i = $4 - $2; if (b > 0) printf "%.2f", i / b; else print "-"}')
    printf '%-8s %4s %10.1f %10s %8s %11s\n' "$c" "$N" "$tps" "${m% *}" "${m#* }" "$mb"
  done
done
