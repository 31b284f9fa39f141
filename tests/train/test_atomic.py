"""atomic_write (chargen.train.atomic): what a killed writer leaves, and who removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from chargen.train.atomic import _host, atomic_write, remove_stale_temps

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the liveness check of a writer is POSIX-only")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_writer_killed_with_sigkill_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from chargen.train.atomic import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b"x" * 1_000_000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        left = list(tmp_path.glob(".last.pt.*.tmp"))
        assert len(left) == 1 and left[0].stat().st_size == 1_000_000
        # while the writer lives, its file is not stale
        assert remove_stale_temps(target) == [] and left[0].exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert left[0].exists() and target.read_bytes() == b"old"  # SIGKILL: nothing cleaned up, nothing replaced

    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_only_temp_files_of_dead_writers_on_this_host_are_removed(tmp_path):
    target = tmp_path / "model.onnx"
    host, dead, live = _host(), dead_pid(), os.getpid()
    keep = [
        f".model.onnx.{host}.{live}.abc123.tmp",  # a live process is writing it
        f".model.onnx.other-machine.{dead}.abc123.tmp",  # another host's process ids mean nothing here
        f".model.onnx.{host}.notapid.abc123.tmp",
        ".model.onnx.k2j4h5g6.tmp",  # not this naming
        f".best.pt.{host}.{dead}.abc123.tmp",  # another target's
        "model.onnx.tmp",
    ]
    stale = f".model.onnx.{host}.{dead}.abc123.tmp"
    for name in keep + [stale]:
        (tmp_path / name).write_bytes(b"partial")
    assert remove_stale_temps(target) == [tmp_path / stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_temp_file_names_carry_the_host_and_the_writer(tmp_path):
    target = tmp_path / "weird [1].pt"
    with atomic_write(target) as f:
        (tmp,) = tmp_path.glob(".weird*.tmp")
        assert tmp.name.startswith(f".weird [1].pt.{_host()}.{os.getpid()}.")
        f.write(b"data")
    assert target.read_bytes() == b"data" and not tmp.exists()


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"] and target.read_bytes() == b"old"
