#!/usr/bin/env bash
# CI: every documented install line, in a clean virtual environment with exactly that
# install, runs the commands its extra promises, and a command whose extra is missing
# says which extra to install (one line, non-zero exit, no traceback).
#
#   bash .ci/install_paths.sh     # 3-6 minutes on 2 cores (most of it building the wheel)
#
# One wheel is built once from the working tree (tracked and untracked, not ignored,
# files, copied to a temporary folder so that nothing is written into the tree) and
# installed, not as an editable install, into every environment with a different set
# of extras: an editable install would import chargen from the source tree, so a module
# or data file missing from the wheel, or an extension that does not land in it, would
# pass unnoticed here and break for users. Building once also spares compiling the C
# extensions in every environment. pip's cache (~/.cache/pip) is used as usual;
# --no-compile skips writing .pyc files for every installed module (torch's alone took
# 30-60 s of a 45-80 s install here), Python compiles what the commands import.
#
# Install lines checked (the README's Install table):
#   (none)      gen --version; gen web (the page's folder, chargen.wasm from the wheel's package data);
#               sample/eval/bench say chargen[cpu]; train/export say chargen[train]; serve says chargen[serve]
#   cpu         gen sample, gen eval --model, gen bench on every exported precision and kernel;
#               train/export/eval --checkpoint say chargen[train], serve says chargen[serve];
#               torch is not installed
#   cpu,train   gen train (3 steps; 1 on the default corpus), gen export fp32/fp16/int8 dynamic/int8 nbits, gen eval
#               --checkpoint, gen sample, benchmarks/bench_runtime.py on a tiny model;
#               then, onnxruntime uninstalled (what `train` alone installs): eval --checkpoint
#               runs, export and sample say chargen[cpu]
#   cpu,serve   gen serve on 127.0.0.1: /health, the playground page (package data), one
#               completion, exit 0 on SIGTERM; torch is not installed
# To add an install line, add its
# extras to LINES below and write its check_<extras, commas as underscores> function
# (if it needs torch, add it to NEEDS_TORCH).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}      # seconds, any one command (installs included)
LINES=(cpu,train cpu cpu,serve base)   # in this order: cpu,train makes the models the others use
NEEDS_TORCH=" cpu,train "              # lines that get the CPU build of torch first

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chargen-install-paths.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
T0=$SECONDS

say() { printf '\n== %s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# run LOG CMD...: run a command with a time limit; on failure show its output and stop
run() {
    local log=$1; shift
    printf '  $ %s\n' "$*"
    local t=$SECONDS rc=0
    timeout "$STEP_TIMEOUT" "$@" >"$log" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        tail -n 40 "$log" >&2
        die "$* exited $rc$([[ $rc == 124 ]] && echo " (timed out after $STEP_TIMEOUT s)")"
    fi
    printf '    ok, %d s\n' $((SECONDS - t))
}

# missing EXTRA CMD...: the command must fail with one line on stderr that names
# chargen[EXTRA], and no traceback
missing() {
    local extra=$1; shift
    printf '  $ %s   # must name chargen[%s]\n' "$*" "$extra"
    local rc=0
    timeout "$STEP_TIMEOUT" "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
    local lines
    lines=$(grep -c . "$WORK/err" || true)
    if [[ $rc == 0 || $rc == 124 ]] || ! grep -qF "chargen[$extra]" "$WORK/err" \
        || grep -q Traceback "$WORK/err" || [[ $lines != 1 ]]; then
        cat "$WORK/out" "$WORK/err" >&2
        die "$* exited $rc; wanted one line on stderr naming chargen[$extra]"
    fi
    printf '    %s\n' "$(cat "$WORK/err")"
}

# make_venv NAME: a fresh environment with exactly the install line NAME ("base": no extras)
make_venv() {
    local name=$1 v=$WORK/venv-$1 spec=$WHEEL shown=chargen
    if [[ $name != base ]]; then spec="$WHEEL[$name]" shown="\"chargen[$name]\""; fi
    say "install line ${name}: pip install $shown ($((SECONDS - T0)) s so far)"
    "$PYTHON" -m venv "$v"
    if [[ $NEEDS_TORCH == *" $name "* ]]; then
        run "$WORK/pip-$name.log" "$v/bin/python" -m pip install --no-compile torch==2.13.0
    fi
    run "$WORK/pip-$name.log" "$v/bin/python" -m pip install --no-compile "$spec"
    run "$WORK/pip-check-$name.log" "$v/bin/python" -m pip check
    export PATH="$v/bin:$ORIG_PATH"
    hash -r
    [[ $(command -v gen) == "$v/bin/gen" ]] || die "gen is not the one of $v"
}

# ------------------------------------------------------------------ the install lines
check_cpu_train() {
    run "$WORK/train.log" gen train --data "$TEXT" --out "$WORK/run" --max-steps 3 --hidden-size 16 \
        --embedding-dim 8 --batch-size 4 --seq-len 16 --eval-interval 3 --sample-length 20
    [[ -f $WORK/run/best.pt && -f $WORK/run/loss.png ]] || die "gen train wrote no best.pt or loss.png"
    # no --data: the default corpus, shipped in the wheel (there is no network to fall back on in CI)
    run "$WORK/train.log" gen train --out "$WORK/run-default" --max-steps 1 --hidden-size 16 \
        --embedding-dim 8 --batch-size 4 --seq-len 16 --eval-interval 1 --sample-length 20
    local args=(--checkpoint "$WORK/run" --data "$TEXT")
    run "$WORK/export.log" gen export "$M/fp32.onnx" "${args[@]}"
    run "$WORK/export.log" gen export "$M/fp16.onnx" --precision fp16 "${args[@]}"
    run "$WORK/export.log" gen export "$M/int8.onnx" --precision int8 --int8-kernel dynamic "${args[@]}"
    run "$WORK/export.log" gen export "$M/int8-nbits.onnx" --precision int8 --int8-kernel nbits "${args[@]}"
    for f in fp32 fp16 int8 int8-nbits; do [[ -s $M/$f.onnx ]] || die "no $M/$f.onnx"; done
    run "$WORK/eval.log" gen eval --checkpoint "$WORK/run" --data "$TEXT"
    run "$WORK/sample.log" gen sample -m "$M/fp32.onnx" --start "ab" --length 20 --seed 1
    run "$WORK/bench-runtime.log" python "$ROOT/benchmarks/bench_runtime.py" --embedding-dim 8 \
        --hidden-size 32 --seconds 0.05 --batch 1
    # `train` without `cpu`: exactly what `pip install "chargen[train]"` leaves
    run "$WORK/pip-cpu,train.log" python -m pip uninstall -y onnxruntime
    run "$WORK/eval.log" gen eval --checkpoint "$WORK/run" --data "$TEXT"
    missing cpu gen export "$WORK/x.onnx" "${args[@]}"
    missing cpu gen sample -m "$M/fp32.onnx" --length 5
}

check_cpu() {
    if python -c "import torch" 2>/dev/null; then die "the cpu install brought torch"; fi
    local f
    for f in fp32 fp16 int8 int8-nbits; do
        run "$WORK/sample.log" gen sample -m "$M/$f.onnx" --start "ab" --length 50 --seed 1 --num-samples 2
        run "$WORK/eval.log" gen eval --model "$M/$f.onnx" --data "$TEXT"
    done
    run "$WORK/sample.log" gen sample -m "$M/int8.onnx" --length 20 --engine chargen
    run "$WORK/bench.log" gen bench -m "$M/fp32.onnx" -m "$M/fp16.onnx" -m "$M/int8.onnx" \
        -m "$M/int8-nbits.onnx" --seconds 0.1 --no-cold-start --batch 1 --batch 4
    run "$WORK/bench.log" gen bench -m "$M/int8.onnx" -m "$M/int8.onnx" --engine onnxruntime \
        --engine chargen --seconds 0.1 --batch 1    # with the cold start: a fresh process imports chargen
    missing train gen train --data "$TEXT" --out "$WORK/run-cpu" --max-steps 1
    missing train gen export "$WORK/x.onnx" --checkpoint "$WORK/run"
    missing train gen eval --checkpoint "$WORK/run" --data "$TEXT"
    missing serve gen serve -m "$M/fp32.onnx" --port 0
}

check_cpu_serve() {
    if python -c "import torch" 2>/dev/null; then die "the cpu,serve install brought torch"; fi
    say "gen serve on 127.0.0.1: /health, the playground page, one completion, SIGTERM"
    local log=$WORK/serve.log port="" i
    gen serve -m "$M/int8.onnx" --host 127.0.0.1 --port 0 --threads 1 >"$WORK/serve.out" 2>"$log" &
    local pid=$!
    for i in $(seq 1 300); do  # the ready line names the address
        port=$(grep -o '127\.0\.0\.1:[0-9]*' "$WORK/serve.out" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/serve.out" "$log" >&2; die "gen serve exited before it was ready"; }
        sleep 0.1
    done
    [[ -n $port ]] || { kill "$pid"; die "gen serve printed no ready line"; }
    local url=http://127.0.0.1:$port
    python - "$url" <<'PY' || { kill "$pid"; tail -n 20 "$log" >&2; die "gen serve did not answer as it should"; }
import json, sys, time, urllib.request
url = sys.argv[1]
for _ in range(100):
    try:
        if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(0.1)
page = urllib.request.urlopen(url + "/", timeout=5).read().decode()
assert "chargen playground" in page, "the playground page is not in the wheel"
req = urllib.request.Request(url + "/v1/completions", method="POST", headers={"content-type": "application/json"},
                             data=json.dumps({"prompt": "ab", "max_tokens": 20, "seed": 1}).encode())
body = json.load(urllib.request.urlopen(req, timeout=30))
assert len(body["choices"][0]["text"]) == 20 and body["usage"]["completion_tokens"] == 20, body
print("    /health 200, / the playground, a 20-character completion")
PY
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    [[ $rc == 0 ]] || die "gen serve exited $rc after SIGTERM"
    printf '    SIGTERM: exit 0\n'
}

check_base() {
    run "$WORK/version.log" gen --version
    run "$WORK/web.log" gen web "$M/int8.onnx" "$WORK/site"
    cmp "$WORK/site/chargen.wasm" "$ROOT/web/static/chargen.wasm" || die "gen web wrote another chargen.wasm than web/static's"
    [[ -f $WORK/site/index.html && -f $WORK/site/int8.onnx ]] || die "gen web left out the page or the model"
    missing cpu gen sample -m "$M/fp32.onnx" --length 5
    missing cpu gen eval --model "$M/fp32.onnx" --data "$TEXT"
    missing cpu gen bench -m "$M/fp32.onnx" --seconds 0.1 --no-cold-start
    missing train gen train --data "$TEXT" --out "$WORK/run-base" --max-steps 1
    missing train gen export "$WORK/x.onnx" --checkpoint "$WORK/run"
    missing train gen eval --checkpoint "$WORK/run" --data "$TEXT"
    missing serve gen serve -m "$M/fp32.onnx" --port 0
}

# ------------------------------------------------------------------ main
ORIG_PATH=$PATH
M=$WORK/models
mkdir -p "$M" "$WORK/src" "$WORK/dist"
TEXT=$WORK/corpus.txt
"$PYTHON" - "$TEXT" <<'EOF'
import random, sys
random.seed(0)
words = "the quick brown fox jumps over a lazy dog and then she said to him".split()
lines = [" ".join(random.choice(words) for _ in range(random.randint(4, 12))).capitalize() + "."
         for _ in range(600)]
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(lines) + "\n")
EOF

say "wheel: pip wheel --no-deps (from a copy of the working tree)"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [[ -e $f ]]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
run "$WORK/wheel.log" "$PYTHON" -m pip wheel --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/chargen-*.whl)
echo "  $(basename "$WHEEL")"

# the commands run where a user would, outside the source tree: run from its root, a fresh
# `python -c` would import the tree's chargen/ folder instead of the installed package
cd "$WORK"
for line in "${LINES[@]}"; do
    make_venv "$line"
    "check_${line//,/_}"
done
say "all install lines passed in $((SECONDS - T0)) s"
