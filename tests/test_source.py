"""The input's checking pass: one pass holding no row, and the same findings when a large file is read in parts."""

import json

import pytest

from tourney import source
from tourney.errors import InputError
from tourney.source import Source


def write_rows(path, rows, blank_every=0):
    """Rows of varied length (so the longest few are a real choice), with a blank line now and then."""
    with open(path, "w") as f:
        for k in range(rows):
            responses = [f"answer {k}.{i} " + "x" * ((k * 37 + i * 11) % 97) for i in range(2 + k % 5)]
            prompt = [{"role": "user", "content": f"q{k}"}] if k % 7 == 3 else f"question {k}"
            f.write(json.dumps({"id": f"p{k}", "prompt": prompt, "responses": responses}) + "\n")
            if blank_every and k % blank_every == 0:
                f.write("\n")


def scanned(path, parallel, monkeypatch, workers=2):
    """Scan ``path`` serially or in ``workers`` forked parts; return what the scan found."""
    with monkeypatch.context() as m:
        if parallel:
            m.setattr(source, "PARALLEL_BYTES", 1)
            m.setattr(source, "MAX_WORKERS", workers)
            m.setattr(source.os, "cpu_count", lambda: workers)
            m.setattr(source, "_can_fork", lambda: True)  # the test process may have threads; the checks need none
        else:
            m.setattr(source, "PARALLEL_BYTES", 1 << 62)
        src = Source(str(path))
        src.scan(lambda item: None, lambda item: len(item.texts))
    return src.rows, src.plan, src.chat, src.complete, [(it.id, it.line, it.texts) for it in src.longest]


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_a_file_read_in_parts_gives_what_one_pass_gives(tmp_path, monkeypatch, workers):
    path = tmp_path / "in.jsonl"
    write_rows(path, 900, blank_every=13)
    assert scanned(path, True, monkeypatch, workers) == scanned(path, False, monkeypatch)
    src = Source(str(path))
    assert [it.id for it in src.items()] == [f"p{k}" for k in range(900)]


def test_the_first_bad_row_in_file_order_is_the_error_with_its_line(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    write_rows(path, 600)
    lines = path.read_text().splitlines(keepends=True)
    lines[450] = '{"id": "late", "prompt": "q", "responses": "not a list"}\n'  # in the second half
    path.write_text("".join(lines))
    for parallel in (False, True):
        with pytest.raises(InputError) as err:
            scanned(path, parallel, monkeypatch)
        assert (err.value.line, err.value.field) == (451, "responses"), str(err.value)
    lines[20] = "{not json\n"  # and one in the first half: that one comes first
    path.write_text("".join(lines))
    for parallel in (False, True):
        with pytest.raises(InputError, match="malformed JSON") as err:
            scanned(path, parallel, monkeypatch)
        assert err.value.line == 21 and str(err.value).startswith(f"{path}:21: ")


def test_an_id_repeated_across_parts_is_found(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    write_rows(path, 600)
    lines = path.read_text().splitlines(keepends=True)
    lines[500] = lines[500].replace('"p500"', '"p7"')
    path.write_text("".join(lines))
    for parallel in (False, True):
        with pytest.raises(InputError, match=r'duplicate id "p7" \(first on line 8\)') as err:
            scanned(path, parallel, monkeypatch)
        assert err.value.line == 501
    # 5 and "5" are one id (pairs' prompt_id writes it as text), as are no id on line 1 and "1"
    row = '"prompt": "p", "responses": ["a", "b"]'
    for text, shown in ((f'{{"id": 5, {row}}}\n{{"id": "5", {row}}}\n', '"5"'),
                        (f'{{{row}}}\n{{"id": "1", {row}}}\n', '"1"')):  # fmt: skip
        path.write_text(text)
        for parallel in (False, True):
            with pytest.raises(InputError, match=rf"duplicate id {shown} \(first on line 1\)") as err:
                scanned(path, parallel, monkeypatch)
            assert err.value.line == 2


def test_the_cli_path_reads_in_parts_unless_it_continues_a_killed_run(tmp_path, monkeypatch):
    from tourney.sink import Resume

    path = tmp_path / "in.jsonl"
    write_rows(path, 300)
    calls = []
    real = source._scan_parallel
    monkeypatch.setattr(source, "_scan_parallel", lambda *a: calls.append(a[-1]) or real(*a))
    monkeypatch.setattr(source, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(source.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(source, "_can_fork", lambda: True)
    Source(str(path)).scan(lambda item: None, lambda item: 1, Resume())  # what a fresh CLI run passes: no rows yet
    assert calls == [2]
    src = Source(str(path))
    src.scan(lambda item: None, lambda item: 1, Resume(prompts=100, last_id='"p99"'))  # continuing: one pass
    assert calls == [2] and src.plan == 200
