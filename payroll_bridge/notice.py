"""The written notice to the employee, in Chinese, as text and as PDF.

It states the legal basis, the loss and how it is documented, the agreement relied on, the monthly
schedule with the limits that bound each month, what happens at the end of employment, and the
route of appeal. The PDF uses reportlab's built-in CID font STSong-Light, so no font file is needed.
Pure rendering: values in, text or bytes out; the caller stores and sends them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date


from payroll_bridge.period import Period, format_yuan

__all__ = ["NoticeLine", "NoticeRefund", "NoticeContent", "render_text", "render_pdf", "notice_id_for"]

_BINDING_ZH = {
    "BALANCE": "本案余额扣完",
    "FLOOR": "扣除后不低于最低工资",
    "CAP20": "不超过当月工资的20%",
    "ENDED": "劳动关系已终止，不再扣除",
    "PAUSED": "异议、申诉或仲裁期间暂停",
    "BEFORE_CONFIRMATION": "案件确认之前，不扣除",
}
_LIMIT_ZH = {
    "FLOOR": "扣除后低于当地月最低工资",
    "CAP20": "超过当月工资的20%",
    "BALANCE": "超过应赔偿金额",
    "ENDED": "劳动关系终止后扣除",
}


@dataclass(frozen=True)
class NoticeLine:
    period: Period
    deduction_fen: int
    binding: str
    minimum_wage_fen: int
    balance_after_fen: int
    excluded: tuple[tuple[str, int], ...] = ()  # (item name, fen) left out of the minimum-wage comparison


@dataclass(frozen=True)
class NoticeRefund:
    """Money taken over a limit and given back."""

    period: Period
    amount_fen: int
    limit: str
    paid_period: Period | None


@dataclass(frozen=True)
class NoticeContent:
    """Everything the notice says, already decided elsewhere."""

    notice_id: str
    issued_on: date
    employer: str
    employee_id: str
    employee_name: str
    case_id: str
    incident_date: date
    incident_summary: str
    loss_fen: int
    award_fen: int | None
    documents: tuple[str, ...]
    agreement_title: str
    agreement_version: str
    agreement_signed_on: date
    lines: tuple[NoticeLine, ...]
    remaining_fen: int
    employment_ends: Period | None
    appeal_days: int
    requires_written_notice: bool
    excluded_items: tuple[str, ...] = ()  # names of what the region leaves out of the comparison
    excludes_contributions: tuple[str, ...] = ()  # "个人缴纳的社会保险费", "个人缴纳的住房公积金"
    refunds: tuple[NoticeRefund, ...] = ()
    claim_deadline: date | None = None  # the employer's last day to claim a balance left at the end


def notice_id_for(case_id: str, issued_on: date) -> str:
    """A notice id readable by people: N-<case>-<yyyymmdd>."""
    return f"N-{case_id}-{issued_on:%Y%m%d}"


def _cn_date(d: date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


def _cn_period(p: Period) -> str:
    return f"{p.year}年{p.month}月"


def _sections(c: NoticeContent) -> list[tuple[str, list[str]]]:
    amount = c.award_fen if c.award_fen is not None else c.loss_fen
    schedule_rows = [
        f"{_cn_period(x.period)}：扣除 {format_yuan(x.deduction_fen)} 元（{_BINDING_ZH.get(x.binding, x.binding)}；"
        f"当地月最低工资 {format_yuan(x.minimum_wage_fen)} 元；扣除后余额 {format_yuan(x.balance_after_fen)} 元"
        + ("；不计入最低工资比较：" + "、".join(f"{n} {format_yuan(f)} 元" for n, f in x.excluded) if x.excluded else "")
        + "）"
        for x in c.lines
    ] or ["目前尚无已核定工资的月份，本通知不载明任何月份的扣除数额，不据此扣除；每月金额在当月工资核定后另行书面通知。"]
    excluded = "、".join(c.excluded_items + c.excludes_contributions) or "加班工资及各类津贴"
    loss_rows = [f"经核实的实际经济损失：人民币 {format_yuan(c.loss_fen)} 元。"]
    if c.award_fen is not None:
        loss_rows.append(f"依据仲裁裁决或调解结果，应赔偿金额调整为：人民币 {format_yuan(c.award_fen)} 元。")
    loss_rows.append("证明材料：" + "；".join(c.documents) + "。")
    end_rows = [
        "劳动关系解除或终止时，公司依法一次性付清您的工资，不从最后一个月工资之外的款项或经济补偿中扣除未清余额；"
        "届时尚未扣完的余额，由双方协商解决，或通过劳动争议调解、仲裁、诉讼处理。"
    ]
    if c.claim_deadline is not None and c.remaining_fen > 0:
        end_rows.append(f"公司如就届时未扣完的余额申请仲裁，应在劳动关系终止后一年内、即{_cn_date(c.claim_deadline)}前提出"
                        "（《劳动争议调解仲裁法》第二十七条）；逾期公司不再主张。")
    refund_rows = [
        f"{_cn_period(r.period)}多扣 {format_yuan(r.amount_fen)} 元（{_LIMIT_ZH.get(r.limit, r.limit)}），"
        + (f"已在{_cn_period(r.paid_period)}工资中退还。" if r.paid_period else "将在下一次发放工资时退还。")
        for r in c.refunds
    ]
    if c.employment_ends is not None:
        end_rows.insert(0, f"您的劳动关系预计于{_cn_period(c.employment_ends)}结束，此后不再从工资中扣除。")
    return [
        ("一、事由", [
            f"案件编号 {c.case_id}：{_cn_date(c.incident_date)}，{c.incident_summary or '您违反保密义务'}，"
            "给公司造成经济损失。该事实已由信息安全部门和人力资源部门分别由不同人员核实确认。",
            f"您于{_cn_date(c.agreement_signed_on)}签署的《{c.agreement_title}》（版本 {c.agreement_version}）"
            "约定，因违反保密义务给公司造成损失的，应承担赔偿责任。",
        ]),
        ("二、法律依据", [
            "《中华人民共和国劳动合同法》第九十条：劳动者违反劳动合同中约定的保密义务，给用人单位造成损失的，应当承担赔偿责任。",
            "《工资支付暂行规定》第十六条：因劳动者本人原因给用人单位造成经济损失的，用人单位可按照劳动合同的约定要求其赔偿"
            "经济损失，经济损失的赔偿可从劳动者本人的工资中扣除；但每月扣除的部分不得超过劳动者当月工资的20%，"
            "若扣除后的剩余工资部分低于当地月最低工资标准，则按最低工资标准支付。",
            "本公司不收取任何违约金或罚款，仅就实际损失要求赔偿。",
        ]),
        ("三、赔偿金额", loss_rows + [f"应赔偿总额：人民币 {format_yuan(amount)} 元；尚余 {format_yuan(c.remaining_fen)} 元。"]),
        ("四、每月扣除计划", [
            "每月扣除额（连同公司当月其他赔偿扣款）不超过当月工资的20%，且扣除后剩余工资不低于当地月最低工资标准；"
            f"与最低工资比较时不计入：{excluded}。工资变动时按实际工资重新计算，扣除数额变化的，公司另行书面通知。",
            *schedule_rows,
        ]),
        ("五、劳动关系结束", end_rows),
        ("六、异议与救济途径", [
            f"如您对上述事实、金额或扣除计划有异议，可自收到本通知之日起{c.appeal_days}日内向人力资源部门书面提出。"
            "该期限届满前公司不依本通知扣除；您在期限内提出异议的，相关扣除暂停执行，直至公司书面答复。",
            "您也可以依法向本单位劳动争议调解委员会申请调解，或向当地劳动人事争议仲裁委员会申请仲裁；"
            "劳动关系存续期间因拖欠劳动报酬发生的争议，申请仲裁不受一年仲裁时效期间的限制，劳动关系终止的，"
            "应当自劳动关系终止之日起一年内提出（《劳动争议调解仲裁法》第二十七条第四款）；对仲裁裁决不服的，可依法向人民法院起诉。",
        ]),
        *([("七、多扣款项的退还", refund_rows)] if refund_rows else []),
    ]


def render_text(c: NoticeContent) -> str:
    """The notice as plain text (UTF-8)."""
    lines = [
        "关于从工资中扣除经济损失赔偿的书面通知",
        "",
        f"通知编号：{c.notice_id}",
        f"致：{c.employee_name}（工号 {c.employee_id}）",
        "",
    ]
    for title, paragraphs in _sections(c):
        lines.append(title)
        lines.extend(f"  {p}" for p in paragraphs)
        lines.append("")
    if c.requires_written_notice:
        lines.append("依据《广东省工资支付条例》，本通知在扣除前以书面形式送达，载明扣除理由及数额。")
    lines += [f"{c.employer}", f"{_cn_date(c.issued_on)}", "", "签收人：__________    签收日期：__________"]
    return "\n".join(lines) + "\n"


def render_pdf(c: NoticeContent) -> bytes:
    """The notice as an A4 PDF in STSong-Light."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    if "STSong-Light" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    body = ParagraphStyle("body", fontName="STSong-Light", fontSize=10.5, leading=16, wordWrap="CJK")
    head = ParagraphStyle("head", parent=body, fontSize=12, leading=20, spaceBefore=6)
    title = ParagraphStyle("title", parent=body, fontSize=16, leading=24, alignment=1)

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    story: list[object] = [Paragraph("关于从工资中扣除经济损失赔偿的书面通知", title), Spacer(1, 4 * mm),
                           Paragraph(esc(f"通知编号：{c.notice_id}"), body),
                           Paragraph(esc(f"致：{c.employee_name}（工号 {c.employee_id}）"), body)]
    for heading, paragraphs in _sections(c):
        story.append(Paragraph(esc(heading), head))
        story.extend(Paragraph(esc(p), body) for p in paragraphs)
    if c.requires_written_notice:
        story.append(Paragraph("依据《广东省工资支付条例》，本通知在扣除前以书面形式送达，载明扣除理由及数额。", body))
    story += [Spacer(1, 8 * mm), Paragraph(esc(c.employer), body), Paragraph(_cn_date(c.issued_on), body),
              Spacer(1, 6 * mm), Paragraph("签收人：__________    签收日期：__________", body)]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, title=f"书面通知 {c.notice_id}", author=c.employer,
                            leftMargin=20 * mm, rightMargin=20 * mm, topMargin=20 * mm, bottomMargin=20 * mm)
    doc.build(story)  # type: ignore[arg-type]
    return buffer.getvalue()
