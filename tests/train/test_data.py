"""Corpus loading and the tiny-shakespeare download (chargen.train.data).

The download tests run a real HTTP server on 127.0.0.1 in a thread; nothing
here touches the internet: an autouse fixture points the default URL at a
port where nothing listens and the default cache at a temp folder.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from chargen.train import data as D
from chargen.train.data import (
    TINYSHAKESPEARE_CHARS,
    TINYSHAKESPEARE_FILENAME,
    TINYSHAKESPEARE_SHA256,
    Corpus,
    CorpusError,
    cache_dir,
    check_length,
    download_tinyshakespeare,
    load_corpus,
    split,
)

REAL_CORPUS = Path("/work/shared/data/tinyshakespeare.txt")
HINT = "--data"

BODY = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 400).encode()
BODY_SHA = hashlib.sha256(BODY).hexdigest()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def dead_url():
    """An http URL on a port that is bound but not listening: connect is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/input.txt"
    finally:
        s.close()


@pytest.fixture(autouse=True)
def _no_network_no_home(monkeypatch, tmp_path, dead_url):
    monkeypatch.setenv(D.URL_ENV, dead_url)
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "default-cache"))


class Server:
    def __init__(self):
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/good.txt":
                    self._send(200, BODY)
                elif self.path == "/truncated.txt":
                    # Promise more than is sent, then hang up.
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY) + 5000))
                    self.end_headers()
                    self.wfile.write(BODY[:3000])
                    self.wfile.flush()
                    self.close_connection = True
                elif self.path == "/stall.txt":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY[:100])
                    self.wfile.flush()
                    server.release.wait(5)
                    self.close_connection = True
                else:
                    self._send(404, b"not here")

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, name):
        return f"{self.base}/{name}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# ---------------------------------------------------------------- download


def test_download_caches_and_second_call_makes_no_request(server, tmp_path):
    cache = tmp_path / "cache"
    url = server.url("good.txt")
    p = download_tinyshakespeare(cache, url=url, sha256=BODY_SHA)
    assert p == cache / TINYSHAKESPEARE_FILENAME
    assert p.read_bytes() == BODY
    assert server.hits == {"/good.txt": 1}
    assert sorted(x.name for x in cache.iterdir()) == [TINYSHAKESPEARE_FILENAME]

    assert download_tinyshakespeare(cache, url=url, sha256=BODY_SHA) == p
    c = load_corpus(None, cache_dir=cache, url=url, sha256=BODY_SHA)
    assert server.hits == {"/good.txt": 1}
    assert c == Corpus(name="tinyshakespeare", text=BODY.decode(), source=url)


def test_download_with_live_progress_bar(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FORCE_TERMINAL", "1")  # rich draws the bar even under pytest
    p = download_tinyshakespeare(tmp_path, url=server.url("good.txt"), sha256=BODY_SHA)
    assert p.read_bytes() == BODY


def test_url_from_environment_and_default_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv(D.URL_ENV, server.url("good.txt"))
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "envcache"))
    c = load_corpus(sha256=BODY_SHA, progress=False)
    assert c.text == BODY.decode() and c.source == server.url("good.txt")
    assert (tmp_path / "envcache" / TINYSHAKESPEARE_FILENAME).read_bytes() == BODY


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError) as e:
        download_tinyshakespeare(cache, url=server.url("good.txt"), sha256="0" * 64)
    msg = one_line(e)
    assert BODY_SHA in msg and "0" * 64 in msg and HINT in msg
    assert list(cache.iterdir()) == []


def test_connection_dropped_midway_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = server.url("truncated.txt")
    with pytest.raises(CorpusError) as e:
        download_tinyshakespeare(cache, url=url, sha256=BODY_SHA)
    msg = one_line(e)
    assert url in msg and HINT in msg and str(cache / TINYSHAKESPEARE_FILENAME) in msg
    assert f"3000 of {len(BODY) + 5000} bytes" in msg
    assert list(cache.iterdir()) == []


def test_nothing_listening(dead_url, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError) as e:
        load_corpus(None, cache_dir=cache, url=dead_url, sha256=BODY_SHA)
    msg = one_line(e)
    assert msg.startswith(f"could not download tiny-shakespeare from {dead_url} (")
    assert "--data path/to/input.txt" in msg and str(cache / TINYSHAKESPEARE_FILENAME) in msg
    assert not (cache / TINYSHAKESPEARE_FILENAME).exists()


def test_http_error(server, tmp_path):
    with pytest.raises(CorpusError) as e:
        download_tinyshakespeare(tmp_path, url=server.url("missing.txt"), sha256=BODY_SHA)
    msg = one_line(e)
    assert "404" in msg and HINT in msg
    assert list(tmp_path.iterdir()) == []


def test_stalled_server_times_out(server, tmp_path):
    with pytest.raises(CorpusError) as e:
        download_tinyshakespeare(
            tmp_path, url=server.url("stall.txt"), sha256=BODY_SHA, timeout=0.3
        )
    msg = one_line(e)
    assert "timed out" in msg and HINT in msg
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_copy_is_replaced_by_a_good_download(server, tmp_path):
    target = tmp_path / TINYSHAKESPEARE_FILENAME
    target.write_bytes(b"not shakespeare")
    p = download_tinyshakespeare(tmp_path, url=server.url("good.txt"), sha256=BODY_SHA)
    assert p.read_bytes() == BODY and server.hits == {"/good.txt": 1}


def test_corrupt_cached_copy_and_offline(dead_url, tmp_path):
    target = tmp_path / TINYSHAKESPEARE_FILENAME
    target.write_bytes(b"not shakespeare")
    with pytest.raises(CorpusError) as e:
        download_tinyshakespeare(tmp_path, url=dead_url, sha256=BODY_SHA)
    assert "fails the sha256 check" in one_line(e)
    assert sorted(x.name for x in tmp_path.iterdir()) == [TINYSHAKESPEARE_FILENAME]


@pytest.mark.skipif(not REAL_CORPUS.is_file(), reason="no local tiny-shakespeare copy")
def test_real_tinyshakespeare_from_cache(tmp_path, dead_url):
    shutil.copyfile(REAL_CORPUS, tmp_path / TINYSHAKESPEARE_FILENAME)
    c = load_corpus(None, cache_dir=tmp_path, url=dead_url)  # default sha256
    assert c.name == "tinyshakespeare"
    assert len(c.text) == TINYSHAKESPEARE_CHARS
    assert c.text.startswith("First Citizen:")
    assert hashlib.sha256(c.text.encode()).hexdigest() == TINYSHAKESPEARE_SHA256


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARGEN_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CHARGEN_CACHE")
    assert cache_dir() == tmp_path / "x" / "chargen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "chargen"


# ---------------------------------------------------------------- files and folders


def test_missing_path(tmp_path):
    p = tmp_path / "nope.txt"
    with pytest.raises(CorpusError) as e:
        load_corpus(p)
    msg = one_line(e)
    assert str(p) in msg and "no such file" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(CorpusError) as e:
        load_corpus(p)
    assert str(p) in one_line(e) and "empty" in str(e.value)
    p.write_bytes(b"\xef\xbb\xbf")  # a BOM and nothing else is empty too
    with pytest.raises(CorpusError):
        load_corpus(p)


def test_invalid_utf8_names_byte_offset(tmp_path):
    p = tmp_path / "latin.txt"
    # 10 two-byte characters, then a lone 0xFF: byte offset 20 (character offset 10).
    p.write_bytes("é".encode() * 10 + b"\xff rest")
    with pytest.raises(CorpusError) as e:
        load_corpus(p)
    msg = one_line(e)
    assert str(p) in msg and "byte offset 20" in msg and "UTF-8" in msg


def test_invalid_utf8_inside_folder_names_the_file(tmp_path):
    (tmp_path / "a.txt").write_text("fine\n", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"abc\x80")
    with pytest.raises(CorpusError) as e:
        load_corpus(tmp_path)
    msg = one_line(e)
    assert str(tmp_path / "b.txt") in msg and "byte offset 3" in msg


def test_folder_without_txt(tmp_path):
    (tmp_path / "notes.md").write_text("# not a txt\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "skip.txt").write_text("hidden\n")
    with pytest.raises(CorpusError) as e:
        load_corpus(tmp_path)
    msg = one_line(e)
    assert str(tmp_path) in msg and "no .txt files" in msg


def test_folder_concatenates_txt_files_in_path_order(tmp_path):
    d = tmp_path / "mybooks"
    (d / "b").mkdir(parents=True)
    (d / "b.txt").write_text("second\n", encoding="utf-8")
    (d / "b" / "c.txt").write_text("third, no newline", encoding="utf-8")
    (d / "a.txt").write_text("first\n", encoding="utf-8")
    (d / "z.txt").write_text("fourth\n", encoding="utf-8")
    (d / "ignored.md").write_text("not a txt\n", encoding="utf-8")
    (d / "empty.txt").write_text("", encoding="utf-8")
    c = load_corpus(d)
    assert c.name == "mybooks" and c.source == str(d)
    assert c.text == "first\nsecond\nthird, no newline\nfourth\n"


def test_bom_stripped_crlf_normalised_unicode_kept(tmp_path):
    text = "Ὦ φίλε — naïve 東京 🚀\r\nsecond line\rkept\n"
    p = tmp_path / "uni.txt"
    p.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    c = load_corpus(str(p))
    assert c.name == "uni" and c.source == str(p)
    assert c.text == "Ὦ φίλε — naïve 東京 🚀\nsecond line\rkept\n"
    assert "\ufeff" not in c.text


def test_any_extension_file_is_read(tmp_path):
    p = tmp_path / "lyrics.md"
    p.write_text("la la la\n", encoding="utf-8")
    assert load_corpus(p) == Corpus(name="lyrics", text="la la la\n", source=str(p))


def test_check_length():
    check_length("abcdef", 6, "for one sequence")
    with pytest.raises(CorpusError) as e:
        check_length(Corpus("tiny", "abc", "tiny.txt"), 101, "for one sequence of 100 + 1")
    msg = one_line(e)
    assert "tiny.txt" in msg and "3 characters" in msg and "101" in msg
    assert "for one sequence of 100 + 1" in msg
    assert isinstance(e.value, ValueError)


def test_split_proportions():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split(text, 0.1)
    assert (len(train), len(val)) == (900, 100) and train + val == text
    train, val = split("0123456789", 0.25)  # int(10 * 0.75) = 7
    assert (train, val) == ("0123456", "789")
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(CorpusError):
            split(text, bad)
    with pytest.raises(CorpusError) as e:
        split("x", 0.5)
    one_line(e)
