"""csrc/pool.c builds and passes its own C test with a plain C compiler, with threads and without:
every chunk once, the caller alone where asked, several callers on one pool, idle workers
asleep, a process forked after the workers started."""

from __future__ import annotations

import re

import pytest
from ckit import CC, build_and_run

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


@pytest.mark.parametrize("flags, threads", [(["-pthread"], "1"), (["-DCHARGEN_NO_THREADS"], "0")],
                         ids=["threads", "no-threads"])
def test_c_pool(tmp_path, flags, threads):
    out = build_and_run(tmp_path, ["pool.c", "test_pool.c"], flags)
    m = re.search(r"test_pool: (\d+) checks, (\d+) failed \(threads (\d),", out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 150, out
    assert m.group(3) == threads
