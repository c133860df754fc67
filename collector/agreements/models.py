"""Agreements on record: their values and the default monitoring notice. Pure: values in, values out.

Theory of operation. HR keeps a registry of **templates** (a confidentiality agreement, the employee
monitoring notice), each with **versions**: the exact text, its SHA-256 and the day it takes effect.
An **employee** is known by the payroll employee id (the one HR records on a case, collector/cases/hr.py),
optionally with the user name the events carry (the person a case is about; shown by its pseudonym,
collector/privacy) and the collector account they sign in with (role ``employee``).

A **signed record** is one employee's signature or acknowledgement of one version, with its evidence:
- ``pdf``: a signed PDF imported from an e-signature platform (契约锁, 法大大, e签宝, 腾讯电子签), its
  embedded signature and timestamp validated with pyHanko against the configured trust roots; the
  result (valid, signer certificate, signing time, timestamp authority, the reason when not valid)
  is kept with the file. A PDF whose signature does not validate stays on record as such and can
  never back a deduction.
- ``acknowledgement``: the employee signed in and acknowledged the exact text in the product; the
  record (text hash, time, hashed session) is a canonical JSON document sealed with an RFC 3161
  timestamp from the configured TSA. Until the token is there it is "not yet timestamped", retried
  by a background job, and backs nothing.

A record **backs a deduction** only when it is of a confidentiality agreement and its evidence holds
(``backs_deduction``); HR's confirmation on a case (collector/cases/hr.py) offers only those.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["TemplateKind", "Platform", "Source", "Template", "Version", "Employee", "SignedRecord",
           "text_sha256", "canonical", "backs_deduction", "default_notice_text", "PLATFORMS", "seal_state"]


class TemplateKind(str, enum.Enum):
    """What a template is."""

    CONFIDENTIALITY = "confidentiality"
    MONITORING_NOTICE = "monitoring_notice"


class Platform(str, enum.Enum):
    """Where a signature was made."""

    QIYUESUO = "qiyuesuo"          # 契约锁
    FADADA = "fadada"              # 法大大
    ESIGN = "esign"                # e签宝
    TENCENT = "tencent"            # 腾讯电子签 (WeCom)
    IN_PRODUCT = "in_product"      # acknowledged in Shoumi
    OTHER = "other"


PLATFORMS: dict[str, str] = {"qiyuesuo": "契约锁", "fadada": "法大大", "esign": "e签宝", "tencent": "腾讯电子签",
                             "in_product": "守密 (in-product)", "other": "other"}


class Source(str, enum.Enum):
    """How a signed record came in."""

    PDF = "pdf"
    ACKNOWLEDGEMENT = "acknowledgement"


@dataclass(frozen=True)
class Template:
    """An agreement or notice HR keeps versions of."""

    title: str
    kind: str
    created_by: str
    created_at_ns: int
    id: int | None = None


@dataclass(frozen=True)
class Version:
    """One version of a template: the exact text, its SHA-256 (of the UTF-8 bytes) and when it takes effect."""

    template_id: int
    version: str
    text: str
    sha256: str
    effective_from: str  # ISO date, China
    created_by: str
    created_at_ns: int
    id: int | None = None


@dataclass(frozen=True)
class Employee:
    """An employee as the registry knows them: payroll id, the user name events carry, their sign-in account."""

    employee_id: str
    user_name: str | None
    account: str | None
    created_by: str
    created_at_ns: int


@dataclass(frozen=True)
class SignedRecord:
    """One employee's signature or acknowledgement of one version, with its evidence.

    ``validation`` (PDF) holds pyHanko's result: ``valid``, ``reason``, ``signer_subject``,
    ``signer_sha256``, ``signing_time``, ``tsa_subject``, ``timestamp_time``. ``document`` is the exact
    bytes the record is about: the PDF, or the canonical JSON of an acknowledgement. ``tsr`` is the
    DER TimeStampResp sealing an acknowledgement (None: not yet timestamped).
    """

    employee_id: str
    version_id: int
    source: str
    platform: str
    evidence_ref: str
    signed_at_ns: int
    identity_check: str
    document_sha256: str
    recorded_by: str
    recorded_at_ns: int
    valid: bool
    validation: Mapping[str, Any] = field(default_factory=dict)
    session_hash: str = ""
    tsr: bytes | None = None
    sealed_at_ns: int | None = None
    seal_attempts: int = 0
    seal_error: str = ""
    next_seal_ns: int = 0
    id: int | None = None


def seal_state(record: SignedRecord) -> str:
    """'sealed', 'pending' (an acknowledgement not yet timestamped) or 'n/a' (a PDF)."""
    if record.source != Source.ACKNOWLEDGEMENT.value:
        return "n/a"
    return "sealed" if record.tsr is not None else "pending"


def text_sha256(text: str) -> str:
    """The SHA-256 of a text's UTF-8 bytes, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The one byte form of a JSON document that is hashed and timestamped (sorted keys, no spaces, UTF-8)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def backs_deduction(record: SignedRecord, kind: str) -> bool:
    """Whether the record may back a deduction: a confidentiality agreement whose evidence holds."""
    if kind != TemplateKind.CONFIDENTIALITY.value or not record.valid:
        return False
    if record.source == Source.ACKNOWLEDGEMENT.value:
        return record.tsr is not None  # never before the timestamp seals it
    return True


def default_notice_text(*, retention_days: float | None, company: str = "本公司") -> str:
    """The employee monitoring notice (个人信息保护法 第十七条, 第二十四条) in Chinese and English."""
    days = f"{retention_days:g}" if retention_days else "—"
    return f"""员工监控告知书（《个人信息保护法》第十七条）

{company}在工作设备上运行守密（Shoumi）数据防泄漏系统。依据《个人信息保护法》第十三条第一款第（二）项及依法制定并公示的劳动规章制度，现告知如下：

一、收集什么：仅在公司配发的工作设备和指定的敏感文件夹内，记录文件操作的元数据（时间、设备、账号、文件路径、文件大小和哈希值、复制/上传的目的位置）。不读取、不保存文件内容，不截屏，不记录键盘输入，不进行任何秘密监控。
二、为什么：防止公司的商业秘密和保密信息泄露，并在发生泄露时查明事实。
三、保存多久：事件记录保存 {days} 天后自动删除；涉及未结案件的记录在案件结束前依法保留；与工资扣款有关的记录至少保存两年。
四、谁能看到：安全人员查看告警和事件；人力资源人员只查看已确认的案件；审计人员查看全部记录但不能修改；IT 人员不查看员工的操作记录。您的姓名以化名显示，显示真实姓名须说明理由并留痕。
五、如何提出异议：您可以向人力资源部门书面提出异议、查阅或复制您的个人信息（第四十五条）、要求更正；对案件结论不服的，可在通知送达后的申诉期内申诉，并可依法申请劳动仲裁。
六、由人决定：每一个案件都由人来审查和决定（安全人员确认事实，人力资源人员另行确认），软件不会自动作出任何对您有重大影响的决定（第二十四条）。任何赔偿只针对有证据证明的实际损失，绝不是罚款。

Employee monitoring notice (PIPL §17)

{company} runs Shoumi, a data-loss-prevention system, on work devices. Under PIPL §13(1)(ii) and the published labour rules:
1. What is collected: on company work devices and designated sensitive folders only, metadata of file operations (time, device, account, file path, size and hash, where a file was copied or uploaded to). File content is never read or kept; no screenshots, no keystrokes, no covert monitoring.
2. Why: to prevent the leak of the company's trade secrets and confidential information, and to establish the facts when one happens.
3. How long: event records are deleted automatically after {days} days; records of an open case are kept until it is closed; records behind a wage deduction are kept at least two years.
4. Who sees it: security staff see alerts and events; HR sees confirmed cases only; auditors see everything and change nothing; IT does not see what employees did. You are shown by a pseudonym; revealing your name needs a recorded reason.
5. How to object: you may object in writing to HR, see or copy what is held about you (§45) and have it corrected; you may appeal a case's outcome within the window stated in its notice, and go to labour arbitration.
6. A person decides: every case is reviewed and decided by people (security confirms the facts, HR confirms separately); the software takes no decision with significant effect on you (§24). Any compensation is for a documented, actual loss, never a fine.
"""
