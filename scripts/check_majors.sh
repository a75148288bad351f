#!/usr/bin/env bash
# Type-checks pg_imgsim for PostgreSQL majors that are not installed here (default: 13 14 16 17), against the
# bindings pgrx 0.18.1 ships pre-generated from each major's headers (pgrx-pg-sys/src/include/pgNN.rs).
# pgrx uses them for docs.rs: DOCS_RS=1 makes pgrx-pg-sys's build script skip bindgen (no pg_config, no
# headers) and `--cfg docsrs`, given to pgrx-pg-sys alone through a rustc wrapper, includes those files.
# This is `cargo check` only: nothing is linked, loaded or run, and the shipped bindings come from the
# minor release pgrx was generated with. Its own target dir (target/check-majors); a few minutes cold.
#   scripts/check_majors.sh [MAJOR...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH=$HOME/.cargo/bin:$PATH
majors=("$@"); [ ${#majors[@]} -gt 0 ] || majors=(13 14 16 17)
wrapper=$root/target/check-majors/rustc-docsrs-pgrx-pg-sys
mkdir -p "$(dirname "$wrapper")"
cat >"$wrapper" <<'SH'
#!/bin/sh
# rustc wrapper: --cfg docsrs for pgrx-pg-sys only (other crates would turn on nightly-only doc features).
rustc=$1; shift
for a in "$@"; do
  if [ "$a" = pgrx_pg_sys ]; then exec "$rustc" "$@" --cfg docsrs; fi
done
exec "$rustc" "$@"
SH
chmod +x "$wrapper"
rc=0
for m in "${majors[@]}"; do
  echo "=== cargo check --features pg$m (pgrx's shipped PostgreSQL $m bindings)"
  if DOCS_RS=1 RUSTC_WRAPPER=$wrapper CARGO_TARGET_DIR=$root/target/check-majors \
     cargo check --lib --no-default-features --features "pg$m pg_test" --message-format short; then
    echo "PASS check pg$m"
  else
    echo "FAIL check pg$m"; rc=1
  fi
done
exit $rc
