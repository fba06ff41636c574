"""The streaming reader: formats, tolerated quirks, and every class of bad input."""
import gzip
import json

import pytest

from conftest import run_script, write_jsonl
from product_qa.data.reading import BadInputLog, BlockReader, Fields, stable_uid
from product_qa.data.sources import describe_source, iter_records
from product_qa.errors import UserError

GOOD = [{"uid": f"B{i:09d}", "title": f"Product {i}", "content": f"Description of product {i}."} for i in range(5)]


def read_all(path, **kwargs):
    log = BadInputLog()
    return list(iter_records(path, bad_log=log, **kwargs)), log


@pytest.mark.parametrize("name, compress", [("trn.json", False), ("trn.jsonl", False), ("trn.json.gz", True)])
def test_reads_json_lines_plain_and_gzip(tmp_path, name, compress):
    records, log = read_all(write_jsonl(tmp_path / name, GOOD, compress=compress))
    assert [r.uid for r in records] == [g["uid"] for g in GOOD]
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
    assert log.total == 0


def test_reads_json_array_file(tmp_path):
    path = tmp_path / "trn.json"
    path.write_text(json.dumps(GOOD, indent=2))
    records, _ = read_all(path)
    assert [r.title for r in records] == [g["title"] for g in GOOD]
    assert describe_source(path).format == "json-array"


def test_tolerates_bom_crlf_blank_lines_and_extra_fields(tmp_path):
    lines = [json.dumps({**g, "target_ind": [1, 2], "target_rel": [1, 1], "extra": {"x": 1}}) for g in GOOD]
    path = tmp_path / "trn.json"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n\r\n".join(lines) + "\r\n\n").encode())
    records, log = read_all(path)
    assert [r.content for r in records] == [g["content"] for g in GOOD]
    assert [r.line for r in records] == [1, 3, 5, 7, 9]  # blank lines count as lines
    assert log.total == 0


def test_lines_across_block_boundaries_keep_their_numbers(tmp_path):
    many = [{"uid": str(i), "title": f"T{i}", "content": "x" * (i % 97)} for i in range(3000)]
    path = write_jsonl(tmp_path / "trn.json", many)
    records = list(iter_records(path, reader=BlockReader(describe_source(path), block_bytes=1000)))
    assert [r.uid for r in records] == [str(i) for i in range(3000)]
    assert all(r.line == int(r.uid) + 1 for r in records)


def test_missing_uid_gets_a_stable_content_hash(tmp_path):
    path = write_jsonl(tmp_path / "trn.json", [{"title": "A", "content": "B"}, {"uid": None, "title": "A",
                                                                              "content": "B"}, {"uid": 7, "title": "C",
                                                                                                "content": "D"}])
    records, _ = read_all(path)
    assert records[0].uid == records[1].uid == stable_uid("A", "B")
    assert records[0].uid.startswith("h") and len(records[0].uid) == 17
    assert records[2].uid == "7"


def test_bad_input_is_skipped_and_counted_per_reason(tmp_path):
    path = tmp_path / "trn.json"
    lines = [
        json.dumps(GOOD[0]).encode(),
        b'{"uid": "1", "title": "broken", "content": ',  # malformed_json, line 2
        json.dumps({"uid": "2", "title": 12345, "content": "x"}).encode(),  # wrong_type, line 3
        json.dumps({"uid": "3", "title": ["a"], "content": "x"}).encode(),  # wrong_type, line 4
        json.dumps({"uid": "4", "title": None, "content": "x"}).encode(),  # wrong_type, line 5
        '{"uid": "5", "title": "caf\xe9", "content": "x"}'.encode("latin-1"),  # invalid_utf8, line 6
        b'["not", "an", "object"]',  # not_an_object, line 7
        json.dumps({"uid": "6", "content": "no title"}).encode(),  # missing_field, line 8
        json.dumps(GOOD[1]).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, log = read_all(path)
    assert [r.uid for r in records] == [GOOD[0]["uid"], GOOD[1]["uid"]]
    assert log.counts == {"malformed_json": 1, "wrong_type": 3, "invalid_utf8": 1, "not_an_object": 1,
                          "missing_field": 1}
    assert log.as_dict()["wrong_type"]["first_lines"] == [3, 4, 5]
    assert log.as_dict()["invalid_utf8"]["first_lines"] == [6]
    assert "null" in log.as_dict()["wrong_type"]["example"] or "int" in log.as_dict()["wrong_type"]["example"]


def test_strict_stops_at_first_bad_line_with_file_line_and_reason(tmp_path):
    path = tmp_path / "trn.json"
    path.write_text(json.dumps(GOOD[0]) + "\n" + json.dumps({"title": 5, "content": "x"}) + "\n")
    with pytest.raises(UserError, match=r"trn\.json:2: wrong type: 'title' is int"):
        list(iter_records(path, strict=True))


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "file is empty"),
    (lambda p: p.write_text("   \n\n"), "no data"),
    (lambda p: p.write_text("uid,title,content\n1,a,b\n"), "not JSON"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\x1f\x8b" + b"garbage"), "cannot decompress"),
])
def test_unusable_files_raise_one_clear_error(tmp_path, setup, message):
    path = tmp_path / "trn.json"
    setup(path)
    with pytest.raises(UserError, match=message):
        describe_source(path)


def test_unreadable_file(tmp_path):
    import os
    path = write_jsonl(tmp_path / "trn.json", GOOD)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything
        pytest.skip("running as root: permissions do not stop reads")
    with pytest.raises(UserError, match="cannot read"):
        describe_source(path)


@pytest.mark.parametrize("content", [None, b"", b"not json at all\n",
                                     b'[{"uid": "1", "title": "A", "content": "b"}, ]',  # trailing comma
                                     b"[" + b"[" * 10_000 + b"]" * 10_000 + b"]"])  # nested 10,000 levels
def test_cli_bad_file_exits_2_with_one_line_and_no_traceback(tmp_path, content):
    path = tmp_path / "trn.json"
    if content is not None:
        path.write_bytes(content)
    result = run_script("prepare_data.py", "--data", str(path), "--no-progress",
                        "--set", f"data.output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert str(path) in result.stderr


@pytest.mark.parametrize("examples", [5, 0])  # 0: the report keeps no examples, --strict still names the line
def test_cli_strict_names_file_line_and_reason(tmp_path, examples):
    path = tmp_path / "trn.json"
    path.write_text(json.dumps(GOOD[0]) + "\n{broken\n")
    result = run_script("prepare_data.py", "--data", str(path), "--strict", "--no-progress",
                        "--set", f"data.output_dir={tmp_path / 'out'}", "--set", "data.workers=1",
                        "--set", f"data.examples_per_reason={examples}")
    assert result.returncode == 2, result.stderr
    assert f"{path}:2: malformed json" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])  # a BOM is skipped as in JSON Lines (it was refused)
@pytest.mark.parametrize("compress", [False, True])
def test_json_array_plain_or_gzip_with_or_without_bom(tmp_path, compress, bom):
    path = tmp_path / ("trn.json.gz" if compress else "trn.json")
    data = bom + json.dumps(GOOD).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    records, _ = read_all(path)
    assert [record.title for record in records] == [good["title"] for good in GOOD]


@pytest.mark.parametrize("compress", [False, True])
def test_a_line_past_the_length_limit_is_one_error_not_all_the_memory(tmp_path, monkeypatch, compress):
    """The red team's 306 KB gzip unpacked to one 300 MB line, and reading it took 1.28 GB: a line is held whole
    to be parsed, so one longer than MAX_LINE_BYTES (no catalog record is) stops the read in one line."""
    import product_qa.data.reading as reading
    monkeypatch.setattr(reading, "MAX_LINE_BYTES", 2000)
    path = tmp_path / ("trn.json.gz" if compress else "trn.json")
    lines = [json.dumps({"uid": str(i), "title": f"T{i}", "content": "c" * 30}) for i in range(40)]
    lines[30] = json.dumps({"uid": "x", "title": "Huge", "content": "a" * 5000})
    (gzip.open if compress else open)(path, "wt").write("\n".join(lines) + "\n")
    reader = BlockReader(describe_source(str(path)), block_bytes=256)
    with pytest.raises(UserError, match=r"trn\.json(\.gz)?: .*over 0 MiB without a line break"):
        list(reader) if compress else list(reader.ranges())
    if compress:  # the line's number, from the blocks before it
        with pytest.raises(UserError, match="line 31 is over"):
            list(BlockReader(describe_source(str(path)), block_bytes=256))
    lines[30] = json.dumps({"uid": "x", "title": "Long", "content": "a" * 1500})  # under the limit: read
    (gzip.open if compress else open)(path, "wt").write("\n".join(lines) + "\n")
    assert sum(block.data.count(b"\n") + 1 for block in BlockReader(describe_source(str(path)), 256)) == 40


def test_bad_lines_kept_without_examples_and_then_strict_on_the_same_outputs(tmp_path):
    """data.examples_per_reason=0 keeps no example of a bad line (the summary crashed on that), and --strict on
    outputs made past a bad line stops at it rather than finding them up to date (it exited 0)."""
    path = tmp_path / "trn.json"
    path.write_text("\n".join(json.dumps(record) for record in GOOD) + "\n{broken\n")
    settings = ["--no-progress", "--data", str(path), "--set", f"data.output_dir={tmp_path / 'out'}",
                "--set", "data.examples_per_reason=0", "--set", "data.min_content_chars=1"]
    result = run_script("prepare_data.py", *settings)
    assert result.returncode == 0 and "bad input: malformed_json" in result.stdout, result.stderr[-2000:]
    kept = (tmp_path / "out" / "train.jsonl").read_bytes()
    result = run_script("prepare_data.py", *settings, "--strict")
    assert result.returncode == 2 and f"{path}:{len(GOOD) + 1}: malformed json" in result.stderr, result.stdout
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == kept


# --- CSV and Parquet, with their own column names -----------------------------------------------------------------

CATALOG_COLUMNS = Fields(uid="sku", title="name", content="description")


def write_csv(path, rows, header=("sku", "name", "description")):
    import csv
    with (gzip.open(path, "wt", newline="", encoding="utf-8") if str(path).endswith(".gz")
          else open(path, "w", newline="", encoding="utf-8")) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_parquet(path, columns: dict, **options):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), path, **options)
    return path


@pytest.mark.parametrize("name", ["catalog.csv", "catalog.csv.gz", "catalog.parquet"])
def test_csv_and_parquet_with_mapped_columns_read_as_json_lines_do(tmp_path, name):
    values = [(g["uid"], g["title"], g["content"]) for g in GOOD]
    if name.endswith(".parquet"):
        path = write_parquet(tmp_path / name, {"price": [1.0] * 5, "sku": [v[0] for v in values],
                                               "name": [v[1] for v in values], "description": [v[2] for v in values]})
    else:
        path = write_csv(tmp_path / name, values)
    records, log = read_all(path, fields=CATALOG_COLUMNS)
    json_records, _ = read_all(write_jsonl(tmp_path / "trn.json", GOOD))
    assert [r[1:] for r in records] == [r[1:] for r in json_records]
    # a CSV record by its line in the file (the header is line 1), a Parquet row by its index
    assert [r.line for r in records] == ([0, 1, 2, 3, 4] if name.endswith(".parquet") else [2, 3, 4, 5, 6])
    assert log.total == 0
    assert describe_source(path, CATALOG_COLUMNS).format == ("parquet" if name.endswith(".parquet") else "csv")


def test_json_fields_are_mapped_too(tmp_path):
    path = write_jsonl(tmp_path / "trn.json", [{"sku": 7, "name": "A", "description": "B", "title": "ignored"}])
    records, _ = read_all(path, fields=CATALOG_COLUMNS)
    assert records[0][1:] == ("7", "A", "B")


def test_csv_quoted_fields_hold_line_breaks_commas_and_quotes_across_blocks(tmp_path, monkeypatch):
    """A record is numbered by the line it starts on; blocks are cut between records, never inside a quoted field."""
    import product_qa.data.tables as tables
    monkeypatch.setattr(tables, "_CUT_CHECK_ROWS", 1)
    rows = [(str(i), f'Mug {i}, "large"', f"Line one\nline two\r\nthree {i}" if i % 3 == 0 else f"Plain {i}")
            for i in range(2000)]
    path = write_csv(tmp_path / "catalog.csv", rows)  # 60 KB: the text is read from the file 8 KB at a time
    reader = tables.CsvReader(describe_source(path, CATALOG_COLUMNS), CATALOG_COLUMNS, block_bytes=64)
    records = list(iter_records(path, fields=CATALOG_COLUMNS, reader=reader))
    assert [r[1:] for r in records] == rows
    starts, line = [], 2
    for _, _, content in rows:
        starts.append(line)
        line += content.count("\n") + 1
    assert [r.line for r in records] == starts
    assert len(list(reader.tasks())) > 5  # it was read in many blocks


def test_csv_bad_rows_are_skipped_and_counted_by_line(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"sku,name,description\n"
                     b"1,Kettle,A steel kettle.\n"
                     b"2,Mug,A mug.,extra\n"  # line 3: one field too many (an unquoted comma)
                     b"\n"  # line 4: blank, skipped
                     b"3,Teapot\n"  # line 5: one field short
                     b"4,Caf\xe9,A latin-1 title.\n"  # line 6: not UTF-8
                     b"5,Lamp,\n"  # line 7: an empty description is a record (the filters drop it)
                     b",Bowl,\"A bowl,\nround.\"\n")  # line 8: no sku, a hash id
    records, log = read_all(path, fields=CATALOG_COLUMNS)
    assert [(r.line, r.uid, r.title, r.content) for r in records] == [
        (2, "1", "Kettle", "A steel kettle."), (7, "5", "Lamp", ""), (8, stable_uid("Bowl", "A bowl,\nround."),
                                                                      "Bowl", "A bowl,\nround.")]
    assert log.as_dict() == {
        "invalid_utf8": {"count": 1, "first_lines": [6], "example": "not valid UTF-8"},
        "wrong_field_count": {"count": 2, "first_lines": [3, 5], "example": "4 fields, the header has 3"}}


def test_parquet_bad_rows_are_counted_by_row_index_across_batches_and_row_groups(tmp_path, monkeypatch):
    n = 100
    titles = [None if i in (7, 61) else f"Product {i}" for i in range(n)]
    path = write_parquet(tmp_path / "catalog.parquet", {"sku": list(range(n)), "name": titles,
                                                        "description": [f"About {i}." for i in range(n)]},
                         row_group_size=30)
    from product_qa.data.parquet import ParquetReader
    reader = ParquetReader(describe_source(path, CATALOG_COLUMNS), CATALOG_COLUMNS, block_bytes=100)
    log = BadInputLog()
    records = list(iter_records(path, fields=CATALOG_COLUMNS, reader=reader, bad_log=log))
    assert [r.line for r in records] == [i for i in range(n) if i not in (7, 61)]
    assert [r.uid for r in records[:3]] == ["0", "1", "2"]  # integer ids, as text
    assert log.as_dict() == {"wrong_type": {"count": 2, "first_lines": [7, 61],
                                            "example": "'name' is null, expected a string"}}
    assert len(list(reader.tasks())) > 4


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_missing_mapped_column_stops_in_one_line_naming_it(tmp_path, kind):
    columns = {"sku": ["1"], "title": ["Kettle"], "description": ["A kettle."]}
    path = (write_parquet(tmp_path / "catalog.parquet", columns) if kind == "parquet"
            else write_csv(tmp_path / "catalog.csv", [("1", "Kettle", "A kettle.")], header=tuple(columns)))
    with pytest.raises(UserError) as error:
        describe_source(path, CATALOG_COLUMNS)
    assert str(error.value) == (f"{path}: no column 'name' (data.title_field); its columns: 'sku', 'title', "
                                "'description'")
    # the default uid column may be missing (records get hash ids); a uid column the config names may not
    records, _ = read_all(path, fields=Fields(title="title", content="description"))
    assert records[0].uid == stable_uid("Kettle", "A kettle.")
    with pytest.raises(UserError, match=r"no column 'id' \(data.uid_field\)"):
        describe_source(path, Fields(uid="id", title="title", content="description"))


def test_a_parquet_column_that_is_not_text_stops_in_one_line(tmp_path):
    path = write_parquet(tmp_path / "catalog.parquet", {"sku": [1], "name": [3], "description": ["A kettle."]})
    with pytest.raises(UserError, match=r"column 'name' \(data.title_field\) holds int64, expected text"):
        describe_source(path, CATALOG_COLUMNS)
    path = write_parquet(tmp_path / "catalog.parquet", {"sku": [1.5], "name": ["A"], "description": ["A kettle."]})
    with pytest.raises(UserError, match=r"column 'sku' \(data.uid_field\) holds double, expected text"):
        describe_source(path, CATALOG_COLUMNS)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_cli_strict_names_file_row_and_reason_for_tables(tmp_path, kind):
    kettle = "A steel kettle that boils a litre of water in two minutes."
    if kind == "csv":
        path = tmp_path / "catalog.csv"
        path.write_text(f'sku,name,description\n1,Kettle,"{kettle}\nTwo lines."\n2,Mug\n')
        first, where = "line 4", f"{path}:4: wrong field count: 2 fields, the header has 3"
    else:
        path = write_parquet(tmp_path / "catalog.parquet", {"sku": ["1", "2"], "name": ["Kettle", None],
                                                            "description": [kettle, "A mug."]})
        first, where = "row 1", f"{path}:1: wrong type: 'name' is null, expected a string"
    settings = ["--data", str(path), "--no-progress", "--set", f"data.output_dir={tmp_path / 'out'}",
                "--set", "data.title_field=name", "--set", "data.content_field=description",
                "--set", "data.uid_field=sku"]
    result = run_script("prepare_data.py", *settings)
    assert result.returncode == 0 and f"{first}: " in result.stdout, result.stderr[-2000:]  # the summary's example
    result = run_script("prepare_data.py", *settings, "--strict")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {where}"


def test_cli_missing_column_exits_2_in_one_line(tmp_path):
    path = write_csv(tmp_path / "catalog.csv", [("1", "Kettle", "A kettle.")])
    result = run_script("prepare_data.py", "--data", str(path), "--no-progress",
                        "--set", f"data.output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {path}: no column 'title' (data.title_field); its columns: 'sku', "
                                     "'name', 'description'")


def test_an_unclosed_csv_quote_stops_at_its_line_not_all_the_memory(tmp_path, monkeypatch):
    """An unclosed quote swallows the rest of the file into one field: past the line limit it is one error."""
    import product_qa.data.tables as tables
    monkeypatch.setattr(tables, "MAX_LINE_BYTES", 100)
    path = tmp_path / "catalog.csv"
    path.write_text('sku,name,description\n1,Kettle,A kettle.\n2,Mug,"A mug\n' + "more text\n" * 50)
    with pytest.raises(UserError, match=r"catalog\.csv:3: malformed CSV \(field larger than field limit"):
        list(iter_records(path, fields=CATALOG_COLUMNS))
