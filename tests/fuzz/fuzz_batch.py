"""atheris harness for the collector's batch decode-and-verify path: bytes off the wire must end
in a stored batch or in a documented refusal (shoumi.batch.BatchError), never in anything else.

    python tests/fuzz/fuzz_batch.py CORPUS_DIR -max_total_time=3600     # by hand, as long as you like
    pytest tests/fuzz                                                   # CI: 20 seconds from a seed corpus

Each input goes through exactly what ingest does before it looks at the store: decode_batch,
check_shape, verify_signature under a fixed key, decode_events. Random bytes almost never carry a
valid signature, so the harness then signs the decoded batch with that key and checks that it
verifies (sign/verify round trip on arbitrary decoded batches) and decodes its events, so that
decode_events sees every shape the fuzzer finds rather than only the seed corpus. Every batch upb
parses is also decoded from its bytes, which must give the same events or the same refusal.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shoumi import batch as chain
    from shoumi.v1 import events_pb2

    from collector.ingest.codec import decode_batch, decode_events

# Fixed so the seed corpus (tests/fuzz/test_fuzz_batch.py) holds batches that pass the signature check.
KEY_SEED = bytes(range(32))
_KEY = Ed25519PrivateKey.from_private_bytes(KEY_SEED)
_PUBLIC = _KEY.public_key().public_bytes_raw()


def _decoded(batch: events_pb2.EventBatch, raw: bytes | None) -> object:
    try:
        return [(e, e.attributes.text) for e in decode_events(batch, raw)]
    except chain.BatchError as exc:
        return str(exc)


def test_one_input(data: bytes) -> None:
    """Runs one input through the decode-and-verify path; only BatchError may escape it. The events
    decoded from the bytes (in C, where built) must be those decoded from upb's messages."""
    try:
        batch = decode_batch(data)
    except chain.BatchError:
        return
    if _decoded(batch, data) != _decoded(batch, None):
        raise AssertionError("the C decoder and the Python path disagree")
    try:
        chain.check_shape(batch)
    except chain.BatchError:
        return
    try:
        chain.verify_signature(batch, _PUBLIC)
        decode_events(batch)
    except chain.BatchError:
        pass
    digest = chain.sign_batch(batch, _KEY)
    if chain.verify_signature(batch, _PUBLIC) != digest:
        raise AssertionError("a batch signed with the key does not verify to its own hash")
    try:
        decode_events(batch)
    except chain.BatchError:
        return


def main() -> None:
    """Runs libFuzzer over test_one_input with the command line's arguments."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
