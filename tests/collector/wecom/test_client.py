"""The WeCom client against the fake WeCom server on loopback."""

from __future__ import annotations

import logging
import threading

import pytest

from collector.wecom.client import WeComClient, WeComError, WeComRateLimited, WeComUnavailable
from collector.wecom.crypto import CallbackCrypto, CallbackRefused, signature
from tests.collector.wecom.fake_wecom import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, FakeWeCom, _bad_padding

CARD = {"title": "扣款通知", "description": "请阅读", "url": "https://collector.test/me/notices/1", "btntxt": "阅读"}


def client(fake: FakeWeCom, **kw: object) -> WeComClient:
    return WeComClient(CORP_ID, SECRET, base_url=fake.base_url, timeout_s=2, **kw)  # type: ignore[arg-type]


def test_send_returns_msgid_and_invalid_users(fake_wecom: FakeWeCom) -> None:
    c = client(fake_wecom)
    result = c.send_app_message(["zhangsan", "nobody"], AGENT_ID, textcard=CARD)
    assert result.msgid.startswith("msg") and result.invaliduser == ("nobody",)
    assert result.delivered_to("zhangsan") and not result.delivered_to("nobody")
    assert fake_wecom.sent[0]["textcard"]["title"] == "扣款通知"


def test_token_cached_and_shared_by_threads(fake_wecom: FakeWeCom) -> None:
    c = client(fake_wecom)
    threads = [threading.Thread(target=c.send_app_message, args=("lisi", AGENT_ID), kwargs={"text": "hi"})
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_wecom.tokens_issued == 1 and len(fake_wecom.sent) == 8


def test_token_refreshed_before_expires_in() -> None:
    now = [0.0]
    with FakeWeCom(expires_in=7200) as fake:
        c = client(fake, clock=lambda: now[0])
        c.send_app_message("lisi", AGENT_ID, text="1")
        now[0] = 6800.0  # within the 300 s margin
        c.send_app_message("lisi", AGENT_ID, text="2")
        assert fake.tokens_issued == 1
        now[0] = 6901.0
        c.send_app_message("lisi", AGENT_ID, text="3")
        assert fake.tokens_issued == 2


def test_42001_refreshes_the_token_and_retries_once(fake_wecom: FakeWeCom) -> None:
    c = client(fake_wecom)
    c.token()
    fake_wecom.expire_next = 1
    assert c.send_app_message("zhangsan", AGENT_ID, text="x").msgid
    assert fake_wecom.tokens_issued == 2 and fake_wecom.answers[-3:] == [42001, 0, 0]


def test_a_second_42001_is_not_retried_again(fake_wecom: FakeWeCom) -> None:
    c = client(fake_wecom)
    fake_wecom.expire_next = 2
    with pytest.raises(WeComError) as info:
        c.send_app_message("zhangsan", AGENT_ID, text="x")
    assert info.value.errcode == 42001 and not fake_wecom.sent


def test_rate_limit_is_a_retryable_error(fake_wecom: FakeWeCom) -> None:
    fake_wecom.rate_limit_next = 1
    with pytest.raises(WeComRateLimited) as info:
        client(fake_wecom).send_app_message("zhangsan", AGENT_ID, text="x")
    assert info.value.retry and info.value.retry_after_s > 0 and "45009" in str(info.value)


def test_down_is_unavailable(fake_wecom: FakeWeCom) -> None:
    fake_wecom.down = True
    with pytest.raises(WeComUnavailable) as info:
        client(fake_wecom).send_app_message("zhangsan", AGENT_ID, text="x")
    assert info.value.retry and "unreachable" in str(info.value)


def test_wrong_corp_id_and_secret_never_show_the_secret(fake_wecom: FakeWeCom, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WeComError) as bad_corp:
        WeComClient("wwwrong", SECRET, base_url=fake_wecom.base_url).check()
    assert bad_corp.value.errcode == 40013 and "invalid corpid" in str(bad_corp.value)
    with pytest.raises(WeComError) as bad_secret:
        WeComClient(CORP_ID, "wrong-secret", base_url=fake_wecom.base_url).check()
    assert bad_secret.value.errcode == 40001
    c = client(fake_wecom)
    c.send_app_message("zhangsan", AGENT_ID, text="x")
    logged = caplog.text + str(bad_corp.value) + str(bad_secret.value) + repr(c)
    assert SECRET not in logged and "wrong-secret" not in logged and c.token() not in logged


def test_oauth_user(fake_wecom: FakeWeCom) -> None:
    fake_wecom.add_code("CODE1", "zhangsan")
    fake_wecom.add_code("CODE2", None, openid="oOutsider")
    c = client(fake_wecom)
    assert c.oauth_user("CODE1").userid == "zhangsan"
    outsider = c.oauth_user("CODE2")
    assert outsider.userid is None and outsider.openid == "oOutsider"
    with pytest.raises(WeComError) as info:
        c.oauth_user("CODE1")  # single use
    assert info.value.errcode == 40029


# --- the callback crypto -------------------------------------------------------------------------------
CRYPTO = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)


def test_round_trip_and_refusals() -> None:
    enc = CRYPTO.encrypt("<xml><MsgType>event</MsgType></xml>")
    sig = signature(TOKEN, "1780000000", "n1", enc)
    assert CRYPTO.decrypt(sig, "1780000000", "n1", enc, now=1780000000) == "<xml><MsgType>event</MsgType></xml>"
    with pytest.raises(CallbackRefused, match="signature"):
        CRYPTO.decrypt("0" * 40, "1780000000", "n1", enc, now=1780000000)
    with pytest.raises(CallbackRefused, match="replay"):
        CRYPTO.decrypt(sig, "1780000000", "n1", enc, now=1780009999)
    other = CRYPTO.encrypt("x", receiver="wwother")
    with pytest.raises(CallbackRefused, match="corp"):
        CRYPTO.decrypt(signature(TOKEN, "1", "n", other), "1", "n", other, now=1)
    bad = _bad_padding(CRYPTO, "x")
    with pytest.raises(CallbackRefused, match="padding"):
        CRYPTO.decrypt(signature(TOKEN, "1", "n", bad), "1", "n", bad, now=1)


def test_crypto_repr_hides_the_key() -> None:
    assert AES_KEY not in repr(CRYPTO) and TOKEN not in repr(CRYPTO)
