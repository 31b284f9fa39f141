#!/usr/bin/env bash
# The Python runtime end to end on aarch64 under qemu-user: `gen sample` on a small random model
# (2 layers, H 64; fp32 and int8) gives the same text as on this x86-64 machine for the same
# seed. About 2 minutes (downloads included); not part of .ci/run (see "Needs" and "Known").
#
#   bash .ci/aarch64_e2e.sh [workdir]      # default: a fresh temporary folder
#
# Needs: root (apt-get; a private mount namespace for /proc/cpuinfo), Debian 12 with
# gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user, network to Debian's archive and PyPI,
# and chargen installed here (the x86 side and the tests' model maker).
# How: Debian's python3.11 for arm64 (apt-get download + dpkg -x into a folder, used as qemu's
# -L root; nothing arm64 is installed into the system), numpy/onnxruntime/typer/rich aarch64
# wheels (pip download --platform), chargen's Cython extensions cross-compiled with setup.py's
# flags against that Python's headers. onnxruntime reads /proc/cpuinfo (pytorch/cpuinfo), which
# qemu 7.2 passes through from the x86 host, and crashes on it: an ARM one is bind-mounted in a
# private mount namespace (unshare -m).
# Known: onnxruntime's int8 graph on qemu's `-cpu max` (NEON, dotprod, i8mm, SVE) gives logits
# up to 4.75 away from x86's; on `-cpu cortex-a76` it agrees (2e-7). So int8 runs on
# cortex-a76 here, fp32 on both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-$(mktemp -d)}
mkdir -p "$W"/debs "$W"/sysroot "$W"/site "$W"/pkg/chargen/runtime "$W"/cy "$W"/models
cd "$W"

dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
(cd debs && apt-get download -q python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
    libpython3.11-dev:arm64 libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64 libexpat1:arm64 zlib1g:arm64 \
    libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 libcrypt1:arm64 libzstd1:arm64 \
    libsqlite3-0:arm64 libuuid1:arm64 libtinfo6:arm64 libncursesw6:arm64 libreadline8:arm64 >/dev/null 2>&1)
for d in debs/*.deb; do dpkg -x "$d" sysroot; done
PYA=(qemu-aarch64 -L "$W/sysroot")

python -m pip download -q --dest wheels --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    "numpy==$(python -c 'import numpy; print(numpy.__version__)')" \
    "onnxruntime==$(python -c 'import onnxruntime; print(onnxruntime.__version__)')" typer rich
for w in wheels/*.whl; do python -m zipfile -e "$w" site/; done

# chargen: its Python files as the installed package lays them out, the extensions cross-built
cp "$ROOT"/chargen/*.py pkg/chargen/ && cp "$ROOT"/runtime/*.py pkg/chargen/runtime/
CC=(aarch64-linux-gnu-gcc -shared -fPIC -fwrapv -O3 -std=c99 -I"$ROOT/csrc" -I"$W/sysroot/usr/include/python3.11"
    -I"$W/sysroot/usr/include" -I"$W/site/numpy/_core/include" -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION)
SO=cpython-311-aarch64-linux-gnu.so
cython -3 --module-name chargen.runtime._sampler "$ROOT/runtime/_sampler.pyx" -o cy/_sampler.c
cython -3 --module-name chargen.runtime._int8 "$ROOT/runtime/_int8.pyx" -o cy/_int8.c
"${CC[@]}" cy/_sampler.c "$ROOT/csrc/sampler.c" -o pkg/chargen/runtime/_sampler.$SO
"${CC[@]}" -fno-trapping-math -pthread cy/_int8.c "$ROOT"/csrc/int8_matrix.c "$ROOT"/csrc/int8_matvec.c \
    "$ROOT"/csrc/int8_gemm.c "$ROOT"/csrc/int8_step.c "$ROOT"/csrc/pool.c \
    "$ROOT"/csrc/gru_gates.c -o pkg/chargen/runtime/_int8.$SO

cat > cpuinfo <<'EOF'
processor	: 0
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

EOF
(cd "$ROOT" && python -c "
import sys; sys.path.insert(0, 'tests')
from conftest import model_file
for p in ('fp32', 'int8'): model_file('$W/models/%s.onnx' % p, p, layers=2, hidden=64)")

ARGS=(sample --start "ROMEO: " --length 300 --seed 7 --engine onnxruntime)
status=0
for case in fp32:max fp32:cortex-a76 int8:cortex-a76; do
    m=${case%%:*} cpu=${case#*:}
    gen "${ARGS[@]}" --model "models/$m.onnx" > "x86-$m.txt"
    start=$(date +%s)
    unshare -m sh -c 'mount --bind "$1/cpuinfo" /proc/cpuinfo && shift && exec "$@"' sh "$W" \
        env PYTHONPATH="$W/pkg:$W/site" "${PYA[@]}" -cpu "$cpu" "$W/sysroot/usr/bin/python3.11" \
        -c "from chargen.cli import main; main()" "${ARGS[@]}" --model "models/$m.onnx" > "a64-$m-$cpu.txt" 2>&1 || true
    if cmp -s "x86-$m.txt" "a64-$m-$cpu.txt"; then
        echo "$m on aarch64 ($cpu): the same text as x86 ($(( $(date +%s) - start )) s)"
    else
        echo "$m on aarch64 ($cpu): DIFFERS from x86"; head -c 300 "a64-$m-$cpu.txt"; echo; status=1
    fi
done
exit $status
