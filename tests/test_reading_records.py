"""TFRecord framing (logformat.records): torn tails, corruption, bounded reads."""

from __future__ import annotations

import os

from trainscope.logformat.records import RecordReader, encode_record


def _write(path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as fh:
        fh.write(data)


def test_reads_whole_records_then_only_new_ones(tmp_path):
    path = tmp_path / "f"
    _write(path, b"".join(encode_record(b"r%d" % i) for i in range(3)))
    reader = RecordReader(path)
    first = reader.read_new()
    assert first.records == [b"r0", b"r1", b"r2"]
    assert first.offsets == [0, 18, 36]
    assert reader.read_new().records == []
    _write(path, encode_record(b"r3"), "ab")
    assert reader.read_new().records == [b"r3"]


def test_torn_tail_is_waited_for_then_read(tmp_path):
    path = tmp_path / "f"
    whole = encode_record(b"x" * 100)
    _write(path, encode_record(b"a") + whole[:50])
    reader = RecordReader(path)
    got = reader.read_new()
    assert got.records == [b"a"] and got.problems == []
    _write(path, whole[50:], "ab")
    got = reader.read_new()
    assert got.records == [b"x" * 100] and got.problems == []


def test_corrupt_header_is_skipped_with_offset(tmp_path):
    path = tmp_path / "f"
    good = encode_record(b"good")
    bad = bytearray(encode_record(b"bad-record"))
    bad[3] ^= 0xFF  # length field: header CRC fails
    _write(path, good + bytes(bad) + good)
    got = RecordReader(path).read_new()
    assert got.records == [b"good", b"good"]
    assert len(got.problems) == 1
    assert f"offset {len(good)}" in got.problems[0] and str(path) in got.problems[0]


def test_bad_data_crc_loses_one_record_only(tmp_path):
    path = tmp_path / "f"
    records = [encode_record(b"rec%d" % i) for i in range(4)]
    broken = bytearray(records[1])
    broken[14] ^= 0x01  # a data byte
    _write(path, records[0] + bytes(broken) + records[2] + records[3])
    got = RecordReader(path).read_new()
    assert got.records == [b"rec0", b"rec2", b"rec3"]
    assert got.offsets == [0, 2 * len(records[0]), 3 * len(records[0])]
    assert got.problems == [f"{path}: corrupt record data at offset {len(records[0])}; record skipped"]


def test_garbage_between_records_resyncs(tmp_path):
    path = tmp_path / "f"
    _write(path, encode_record(b"one") + os.urandom(5000) + encode_record(b"two"))
    got = RecordReader(path).read_new()
    assert got.records[0] == b"one" and got.records[-1] == b"two"
    assert got.problems and "corrupt record header" in got.problems[0]


def test_bounded_reads_return_everything_in_pieces(tmp_path):
    path = tmp_path / "f"
    payloads = [os.urandom(100 + i) for i in range(50)]
    _write(path, b"".join(encode_record(p) for p in payloads))
    reader = RecordReader(path)
    got: list[bytes] = []
    while True:
        result = reader.read_new(max_bytes=1000)
        got.extend(result.records)
        if not result.more:
            break
    assert got == payloads


def test_record_longer_than_the_window_is_still_read(tmp_path):
    path = tmp_path / "f"
    _write(path, encode_record(b"z" * 5000))
    result = RecordReader(path).read_new(max_bytes=100)
    assert result.records == [b"z" * 5000] and not result.more


def test_missing_file_is_a_problem_not_an_exception(tmp_path):
    got = RecordReader(tmp_path / "absent").read_new()
    assert got.records == [] and "cannot stat" in got.problems[0]
