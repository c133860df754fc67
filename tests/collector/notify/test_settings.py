"""Notification settings: from the environment, secrets kept out of reprs and logs, the worker wired
into the collector's background jobs only when something is to be notified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from collector.notify.worker import build_worker
from collector.settings import CollectorSettings, NotifySettings
from collector.storage import MemoryStore
from collector.wiring import build_services

URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7aaa-4bc4-97a0-0ec2sifa5aaa"


def test_settings_come_from_the_environment_and_keep_the_webhook_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOUMI_COLLECTOR_NOTIFY__WECOM_WEBHOOKS", json.dumps([URL]))
    monkeypatch.setenv("SHOUMI_COLLECTOR_NOTIFY__PUBLIC_BASE_URL", "https://shoumi.example.com/")
    monkeypatch.setenv("SHOUMI_COLLECTOR_NOTIFY__MAIL_TO", json.dumps(["security@example.com"]))
    monkeypatch.setenv("SHOUMI_COLLECTOR_NOTIFY__SMTP_PASSWORD", "s3cret")
    settings = CollectorSettings()
    notify = settings.notify
    assert notify.wecom_webhooks[0].get_secret_value() == URL and notify.public_base_url == "https://shoumi.example.com"
    assert notify.mail_to == ["security@example.com"] and notify.language == "both" and notify.min_severity == "high"
    assert "0ec2sifa5aaa" not in repr(settings) and "s3cret" not in repr(settings)
    assert "0ec2sifa5aaa" not in settings.model_dump_json()


@pytest.mark.parametrize("bad", [{"public_base_url": "shoumi.example.com"}, {"wecom_webhooks": ["ftp://x"]},
                                 {"wecom_per_minute": 21}, {"language": "fr"}, {"min_severity": "urgent"}])
def test_bad_settings_are_refused_with_the_reason(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NotifySettings.model_validate(bad)


def test_the_worker_is_built_only_for_something_to_notify_and_logs_keys_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    store = MemoryStore()
    assert build_worker(store, NotifySettings()) is None
    assert build_worker(store, NotifySettings(smtp_host="mail.example.com")) is None  # nobody to write to
    worker = build_worker(store, NotifySettings.model_validate(
        {"wecom_webhooks": [URL], "smtp_host": "mail.example.com", "mail_to": ["sec@example.com"]}))
    assert worker is not None
    assert [c.label for c in worker.channels] == [
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a…5aaa", "smtp://mail.example.com:587"]
    assert "0ec2sifa5aaa" not in caplog.text and "693a…5aaa" in caplog.text
    worker.close()


def test_the_collector_runs_the_worker_with_its_background_jobs(tmp_path: Path) -> None:
    settings = CollectorSettings(data_dir=tmp_path, insecure_dev=True,
                                 notify=NotifySettings.model_validate({"wecom_webhooks": [URL]}))
    built = build_services(settings, store=MemoryStore())
    assert built.notifier is not None and "notify" in [name for name, _, _ in built.background._jobs]
    quiet = build_services(CollectorSettings(data_dir=tmp_path, insecure_dev=True), store=MemoryStore())
    assert quiet.notifier is None and "notify" not in [name for name, _, _ in quiet.background._jobs]
