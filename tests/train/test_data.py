"""Corpus loading (chargen.train.data): the packaged tiny-shakespeare, files and folders."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from chargen.train.data import (
    TINYSHAKESPEARE_CHARS,
    TINYSHAKESPEARE_SHA256,
    TINYSHAKESPEARE_SOURCE,
    Corpus,
    CorpusError,
    check_length,
    load_corpus,
    split,
    tinyshakespeare_text,
)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# ---------------------------------------------------------------- the packaged tiny-shakespeare


def test_default_corpus_is_the_packaged_tinyshakespeare():
    c = load_corpus(None)
    assert c.name == "tinyshakespeare" and c.source == TINYSHAKESPEARE_SOURCE
    assert len(c.text) == TINYSHAKESPEARE_CHARS
    assert c.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert hashlib.sha256(c.text.encode()).hexdigest() == TINYSHAKESPEARE_SHA256
    assert len(set(c.text)) == 65


def test_a_damaged_packaged_copy_is_refused(tmp_path):
    text = tinyshakespeare_text()
    altered = tmp_path / "altered.txt.gz"
    altered.write_bytes(gzip.compress(text.replace("ROMEO", "ROMEA", 1).encode()))
    with pytest.raises(CorpusError) as e:
        tinyshakespeare_text(altered)
    msg = one_line(e)
    assert str(altered) in msg and TINYSHAKESPEARE_SHA256 in msg and "reinstall chargen" in msg

    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(gzip.compress(text.encode())[:50_000])
    with pytest.raises(CorpusError) as e:
        tinyshakespeare_text(truncated)
    assert str(truncated) in one_line(e) and "--data" in str(e.value)

    with pytest.raises(CorpusError) as e:
        tinyshakespeare_text(tmp_path / "missing.txt.gz")
    assert "missing.txt.gz" in one_line(e)


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
