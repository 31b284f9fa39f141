"""csrc/ on 64-bit ARM: every C test cross-built with Debian's aarch64-linux-gnu-gcc and run under
qemu-aarch64 (user-mode emulation), at the C tests' -O2 and at setup.py's -O3 -fno-trapping-math;
chargen's int8 step on CPUs with and without dotprod and i8mm, every matrix-vector and packed
kernel each CPU runs held to the plain loops bit for bit (and a fault put into a NEON packed
kernel seen); the sampler draws the same ids as on this machine.

Needs `apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user` (.ci/run installs them). Without them the
tests fail where the CI variable is set (CI must not pass by skipping them) and are skipped,
saying what to install, elsewhere (a developer's machine without the cross tools)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import ckit
import pytest

AARCH64_CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64")
SYSROOT = "/usr/aarch64-linux-gnu"  # libc6-dev-arm64-cross (comes with the compiler)
INSTALL = "apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"

# qemu's CPUs and the int8 kernels each runs: max has NEON, dotprod and i8mm; cortex-a76 and
# neoverse-n1 NEON and dotprod; cortex-a53 NEON only. The step's matrix-vector kernel (the first),
# every matrix-vector kernel the C test holds to the plain loops, and every packed one.
KERNELS = {"max": "neon-i8mm", "cortex-a76": "neon-dotprod", "neoverse-n1": "neon-dotprod", "cortex-a53": "neon"}
MATVEC = {"max": "neon-i8mm,neon-dotprod,neon,c", "cortex-a76": "neon-dotprod,neon,c",
          "neoverse-n1": "neon-dotprod,neon,c", "cortex-a53": "neon,c"}
PACKED = {"max": "neon-i8mm,neon-dotprod,c", "cortex-a76": "neon-dotprod,c", "neoverse-n1": "neon-dotprod,c",
          "cortex-a53": "c"}
CPUS = list(KERNELS)
# the C tests' own flags (ckit: -O2), and setup.py's for the extensions' C files
OPTS = {"O2": [], "setup": ["-O3", "-fno-trapping-math"]}
TIMEOUT = 300  # seconds a run may take under emulation (the slowest, test_sampler, ~7 s on an idle core)


@pytest.fixture(scope="module", autouse=True)
def cross_tools():
    missing = [name for name, path in (("aarch64-linux-gnu-gcc", AARCH64_CC), ("qemu-aarch64", QEMU)) if path is None]
    if not Path(SYSROOT, "lib").is_dir():
        missing.append(f"{SYSROOT} (libc6-dev-arm64-cross)")
    if missing:
        why = f"{', '.join(missing)} not found: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the aarch64 tests cannot run: {why}")
        pytest.skip(why)


def qemu(cpu: str) -> list[str]:
    return [QEMU, "-L", SYSROOT, "-cpu", cpu]


def cross_run(tmp_path: Path, sources: list[str], flags=(), cpu: str = "max") -> str:
    return ckit.build_and_run(tmp_path, sources, flags, cc=AARCH64_CC, runner=qemu(cpu), timeout=TIMEOUT)


def summary(out: str, name: str) -> tuple[int, int]:
    m = re.search(rf"{name}: (\d+) checks, (\d+) failed", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("opt", OPTS, ids=list(OPTS))
def test_sampler(tmp_path, opt, native_golden):
    """All checks pass, and the golden draws (ids and every bit of the probabilities) are this
    machine's: the same seed and logits give the same ids on every platform."""
    out = cross_run(tmp_path, ["sampler.c", "test_sampler.c"], OPTS[opt])
    checks, failed = summary(out, "test_sampler")
    assert failed == 0 and checks > 100_000, out
    golden = [line for line in out.splitlines() if line.startswith("golden")]
    assert len(golden) == 3, out
    assert golden == native_golden


@pytest.fixture(scope="module")
def native_golden(tmp_path_factory) -> list[str]:
    """The golden lines of test_sampler built and run on this machine."""
    if ckit.CC is None:
        pytest.fail("no C compiler (cc) on PATH for the native build")
    out = ckit.build_and_run(tmp_path_factory.mktemp("native"), ["sampler.c", "test_sampler.c"])
    return [line for line in out.splitlines() if line.startswith("golden")]


@pytest.mark.parametrize("opt", OPTS, ids=list(OPTS))
def test_gru_train(tmp_path, opt):
    checks, failed = summary(cross_run(tmp_path, ["gru_gates.c", "gru_train.c", "test_gru_train.c"], OPTS[opt]), "test_gru_train")
    assert failed == 0 and checks >= 8


def int8_sources() -> list[str]:
    return ["int8_matrix.c", "int8_matvec.c", "int8_gemm.c", "int8_step.c", "pool.c", "gru_gates.c", "test_int8_step.c"]


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("opt", OPTS, ids=list(OPTS))
def test_int8_step(tmp_path, opt, cpu):
    """Each ARM kernel, picked at run time by the CPU's features, gives the plain loops' results;
    so does every other kernel the CPU runs, matrix-vector and packed, alone and as the step's
    product (wide and narrow weights, row and column tails: csrc/test_int8_step.c)."""
    out = cross_run(tmp_path, int8_sources(), ["-pthread", *OPTS[opt]], cpu)
    checks, failed = summary(out, "test_int8_step")
    assert failed == 0 and checks >= 160, out
    assert f"(kernel {KERNELS[cpu]}, threads 1, matvec {MATVEC[cpu]}, packed {PACKED[cpu]})" in out, out


# Faults put into a copy of int8_gemm.c's NEON packed kernels, each of which the C test must see:
# (kernel, the text, what it becomes)
FAULTS = {
    "sdot-no-offset": ("neon-dotprod", "NEON_WIDTH, X_OFFSET_SDOT, w,", "NEON_WIDTH, 0, w,"),
    "sdot-wrong-lane": ("neon-dotprod", "a[r][1] = vdotq_laneq_s32(a[r][1], w1, xv[r], l);",
                        "a[r][1] = vdotq_laneq_s32(a[r][1], w1, xv[r], (l) ^ 1);"),
    "i8mm-outputs-swapped": ("neon-i8mm", "wv[1] = vreinterpretq_s8_s32(vzip2q_s32(lo0, lo1));",
                             "wv[1] = vreinterpretq_s8_s32(vzip1q_s32(lo0, lo1));"),
    "i8mm-odd-rows": ("neon-i8mm", "vst1q_s32(odd + 4, vreinterpretq_s32_s64(vzip2q_s64(a2, a3)));",
                      "vst1q_s32(odd + 4, vreinterpretq_s32_s64(vzip1q_s64(a2, a3)));"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_int8_packed_fault_is_seen(tmp_path, fault):
    """The C test fails a NEON packed kernel with a fault in it: the checks of that kernel's
    products fail, those of every other kernel alone pass (the step's checks, which compare the
    kernels with the picked one, may fail too where the fault is in the picked kernel)."""
    kernel, text, broken = FAULTS[fault]
    csrc = tmp_path / "csrc"
    shutil.copytree(ckit.CSRC, csrc)
    gemm = csrc / "int8_gemm.c"
    source = gemm.read_text()
    assert source.count(text) == 1, f"int8_gemm.c no longer has {text!r}: update FAULTS"
    gemm.write_text(source.replace(text, broken))
    ran = ckit.run(ckit.build(tmp_path, int8_sources(), ["-pthread"], cc=AARCH64_CC, csrc=csrc), qemu("max"), TIMEOUT)
    checks, failed = summary(ran.stdout, "test_int8_step")
    failures = [line for line in ran.stdout.splitlines() if line.startswith("FAILED")]
    assert ran.returncode != 0 and failed > 0 and len(failures) == failed, ran.stdout
    alone = [line for line in failures if line.startswith(("FAILED: packed ", "FAILED: matvec ", "FAILED: matmul "))]
    assert alone and all(line.startswith(f"FAILED: packed {kernel} ") for line in alone), ran.stdout


def test_int8_step_plain_c(tmp_path):
    """CHARGEN_NO_NEON: the plain-C kernel on ARM too."""
    out = cross_run(tmp_path, int8_sources(), ["-pthread", "-DCHARGEN_NO_NEON"])
    checks, failed = summary(out, "test_int8_step")
    assert failed == 0 and checks >= 40 and "(kernel c," in out, out


# qemu-user 7.2 (Debian 12) aborts a program that starts a thread in a child forked while the
# parent had another thread running (qemu's own assertions: "qemu_plugin_vcpu_init_hook:
# assertion failed" and "cpu_exec: assertion failed: (cpu == current_cpu)"): nothing of
# chargen's, this program shows it on its own.
FORK_BUG = r"""
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go;
static void *waiter(void *a) {
    pthread_mutex_lock(&m);
    while (!go) pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    return a;
}
static void *nothing(void *a) { return a; }
int main(void) {
    pthread_t t, u;
    int status = -1;
    pid_t pid;
    pthread_create(&t, 0, waiter, 0);
    usleep(50000);
    pid = fork();
    if (pid == 0) _exit(pthread_create(&u, 0, nothing, 0) || pthread_join(u, 0));
    waitpid(pid, &status, 0);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c);
    pthread_mutex_unlock(&m);
    pthread_join(t, 0);
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
"""


def qemu_forks_threads(tmp_path: Path) -> bool:
    """Whether this qemu runs a thread started in a child forked from a threaded process."""
    src = tmp_path / "fork_bug.c"
    src.write_text(FORK_BUG)
    exe = tmp_path / "fork_bug"
    subprocess.run([AARCH64_CC, "-O2", "-pthread", str(src), "-o", str(exe)], check=True)
    return ckit.run(exe, qemu("max"), TIMEOUT).returncode == 0


def test_pool(tmp_path):
    """Every check passes; where this qemu has the fork bug above, the three checks made in the
    forked child (the child dies in qemu) are excused, and only those (test_c_pool runs them
    natively)."""
    if not (ckit.CSRC / "pool.c").exists():
        pytest.fail("csrc/pool.c is missing")
    ran = ckit.run(ckit.build(tmp_path, ["pool.c", "test_pool.c"], ["-pthread"], cc=AARCH64_CC), qemu("max"), TIMEOUT)
    checks, failed = summary(ran.stdout, "test_pool")
    assert checks >= 100, ran.stdout
    failures = [line for line in ran.stdout.splitlines() if "FAIL" in line and "checks" not in line]
    assert len(failures) == failed, ran.stdout
    if failed and not qemu_forks_threads(tmp_path):
        child = [f for f in failures if re.search(r"fork: the old pool|fork: a new pool", f)]
        assert child == failures and len(child) <= 3, ran.stdout + ran.stderr
    else:
        assert failed == 0 and ran.returncode == 0, ran.stdout + ran.stderr
