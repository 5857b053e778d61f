"""Record header keys that are not UTF-8 (costline.kafkaheaders), read through kafka-python's own record-batch
builder and reader: what the Java client reads (U+FFFD for each malformed byte), the rest of the record intact,
in every codec a production cluster uses. tests/test_processor_production_kafka.py runs it through a broker."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from costline.kafkaheaders import read_header_keys_like_java


class RawKey(str):
    """A header key whose wire bytes are ``raw`` (what sarama / librdkafka can write)."""

    def __new__(cls, raw: bytes) -> "RawKey":
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, *args, **kwargs) -> bytes:  # noqa: ARG002
        return self.raw


@pytest.fixture
def kafka_python_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python's own record reader, as a fresh process has it (another test may have installed costline's):
    list it before the fixtures that make consumers, so what the test proves is that the code under test
    installs it."""
    read = DefaultRecordBatch._read_msg
    monkeypatch.setattr(DefaultRecordBatch, "_read_msg", getattr(read, "__wrapped__", read))


CODECS = [DefaultRecordBatch.CODEC_NONE, DefaultRecordBatch.CODEC_GZIP, DefaultRecordBatch.CODEC_SNAPPY,
          DefaultRecordBatch.CODEC_LZ4, DefaultRecordBatch.CODEC_ZSTD]


def _batch(codec: int, records: list[tuple[bytes, list]]) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, (value, headers) in enumerate(records):
        assert builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=value, headers=headers)
    return bytes(builder.build())


def _read(data: bytes) -> list[tuple[int, bytes, bytes, list]]:
    return [(r.offset, r.key, r.value, r.headers) for r in DefaultRecordBatch(data)]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("raw, read_as", [
    (b"x-\xff\xfe-source", "x-\ufffd\ufffd-source"),   # two invalid start bytes: one U+FFFD each
    (b"\xc3\x28", "\ufffd("),                          # a lead byte without its continuation
    (b"tenant-\xe2\x82", "tenant-\ufffd"),              # a character cut at the end (a byte-limit cut)
    (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),            # an encoded surrogate: not UTF-8 either
])
def test_a_key_that_is_not_utf8_reads_like_the_java_client(codec: int, raw: bytes, read_as: str):
    assert read_header_keys_like_java()
    data = _batch(codec, [
        (b"first", [("content-type", b"application/x-protobuf")]),
        (b"second", [(RawKey(raw), b"\xc3\x28"), ("content-type", b"application/x-protobuf")]),
        (b"third", []),
    ])
    assert _read(data) == [
        (0, b"k0", b"first", [("content-type", b"application/x-protobuf")]),
        (1, b"k1", b"second", [(read_as, b"\xc3\x28"), ("content-type", b"application/x-protobuf")]),
        (2, b"k2", b"third", []),
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_well_formed_keys_read_as_before(codec: int):
    """UTF-8 keys (a non-ASCII one among them) read exactly as written; the batch's bytes are not copied."""
    assert read_header_keys_like_java()
    headers = [("trace-origin", b"eu"), ("région", b"\xff"), ("", b"")]
    data = _batch(codec, [(b"v", headers)])
    batch = DefaultRecordBatch(data)
    assert [(r.value, r.headers) for r in batch] == [(b"v", headers)]
    assert type(batch._buffer) is bytearray


def test_installing_twice_wraps_once():
    assert read_header_keys_like_java()
    first = DefaultRecordBatch._read_msg
    assert read_header_keys_like_java()
    assert DefaultRecordBatch._read_msg is first


def test_a_truly_corrupt_record_is_still_refused():
    """Leniency is for text only: a record whose sizes do not add up is still kafka-python's error."""
    from kafka.errors import CorruptRecordError

    assert read_header_keys_like_java()
    data = bytearray(_batch(DefaultRecordBatch.CODEC_NONE, [(b"v", [(RawKey(b"\xff"), b"x")])]))
    assert data[-4:] == b"\x02\xff\x02x"  # the record ends: key length 1 (zigzag), key, value length 1, value
    data[-4] = 0x20  # key length 16: past the record's end (the lenient re-read meets it too)
    with pytest.raises(CorruptRecordError):
        _read(bytes(data))
