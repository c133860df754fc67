"""Invariants of the callback crypto: what WeCom encrypts decrypts to itself; any change is refused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.wecom.crypto import CallbackCrypto, CallbackRefused, signature
from tests.collector.wecom.fake_wecom import AES_KEY, CORP_ID, TOKEN

CRYPTO = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
NOW = 1_780_000_000


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=600), st.binary(min_size=16, max_size=16))
def test_round_trip(message: str, random16: bytes) -> None:
    enc = CRYPTO.encrypt(message, random16=random16)
    assert CRYPTO.decrypt(signature(TOKEN, str(NOW), "n", enc), str(NOW), "n", enc, now=NOW) == message


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=200), st.data())
def test_a_changed_ciphertext_under_the_original_signature_is_refused(message: str, data: st.DataObject) -> None:
    """AES-CBC alone is malleable: the signature over the ciphertext (with the secret Token) is what binds it."""
    import base64
    enc = CRYPTO.encrypt(message)
    sig = signature(TOKEN, str(NOW), "n", enc)
    raw = bytearray(base64.b64decode(enc))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    changed = base64.b64encode(bytes(raw)).decode()
    try:
        CRYPTO.decrypt(sig, str(NOW), "n", changed, now=NOW)
    except CallbackRefused as exc:
        assert exc.reason == "bad signature"
    else:
        raise AssertionError("a changed ciphertext verified")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100), st.text(min_size=1, max_size=40))
def test_a_wrong_token_never_verifies(message: str, other: str) -> None:
    enc = CRYPTO.encrypt(message)
    if other == TOKEN:
        return
    try:
        CRYPTO.decrypt(signature(other, str(NOW), "n", enc), str(NOW), "n", enc, now=NOW)
    except CallbackRefused as exc:
        assert exc.reason == "bad signature"
    else:
        raise AssertionError("verified with another token")
