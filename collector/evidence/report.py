"""The arbitrator's report of a case (PDF): the case in plain Chinese, its timeline, what can be verified and how.

Made from the bundle's own members (collector/evidence/bundle.py), so it says nothing the bundle does
not hold; it goes into the bundle as ``report.pdf`` (listed in the signed manifest) and is also
downloadable from the case page. reportlab lays it out in its built-in CID font STSong-Light (as the
payroll bridge's notice does), so no font file is needed; a PDF reader supplies the glyphs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any, Mapping, Sequence

__all__ = ["report_pdf", "MAX_TIMELINE"]

MAX_TIMELINE = 300  # rows of the timeline in the PDF; the bundle's events.json holds them all
_CN = dt.timezone(dt.timedelta(hours=8))
_STATES = {"open": "已立案", "under_review": "审查中", "security_confirmed": "安全团队已确认",
           "hr_confirmed": "人力资源已确认", "sent_to_payroll": "已移交薪资", "dismissed": "已驳回",
           "appealed": "员工已申诉", "closed": "已结案"}
_KINDS = {"file.read": "读取文件", "file.write": "写入文件", "file.create": "新建文件", "file.delete": "删除文件",
          "file.move": "移动文件", "file.copy": "复制文件", "usb.mount": "插入移动存储", "usb.copy": "复制到移动存储"}
_ACTIONS = {"open": "立案", "transition": "状态变更", "comment": "添加备注", "attach": "上传附件", "assign": "分派",
            "resend": "重新移交", "hr.loss": "登记损失", "hr.agreement": "登记保密协议", "hr.employee": "登记员工信息",
            "hr.notice": "登记通知送达", "hr.appeal": "登记申诉", "hr.decision": "登记申诉决定"}


def _when(ns: Any) -> str:
    if not isinstance(ns, int) or ns <= 0:
        return "—"
    return dt.datetime.fromtimestamp(ns / 1e9, _CN).strftime("%Y-%m-%d %H:%M:%S")


def _yuan(fen: Any) -> str:
    return f"{fen / 100:.2f}" if isinstance(fen, int) else "—"


def _load(members: Mapping[str, bytes], path: str, default: Any) -> Any:
    try:
        return json.loads(members[path])
    except (KeyError, ValueError):
        return default


def _timeline(case: Mapping[str, Any], events: list[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    rows: list[tuple[int, str, str]] = []
    for e in events:
        what = _KINDS.get(str(e.get("kind")), str(e.get("kind")))
        target = str(e.get("path") or "")
        if e.get("dest_path"):
            target += f" → {e['dest_path']}"
        rows.append((int(e.get("time_ns") or 0), f"终端事件：{what}", f"{target}（用户 {e.get('user') or '—'}，"
                     f"进程 {e.get('process') or '—'}，终端 {e.get('agent_id')} 序号 {e.get('seq')}）"))
    for h in case.get("history") or []:
        action = _ACTIONS.get(str(h.get("action")), str(h.get("action")))
        if h.get("to_state"):
            action += f"：{_STATES.get(str(h.get('from_state')), '—')} → {_STATES.get(str(h['to_state']), h['to_state'])}"
        rows.append((int(h.get("at_ns") or 0), f"案件处理：{action}", f"操作人 {h.get('actor')}"))
    return sorted(rows)


def _agreement_description(members: Mapping[str, bytes]) -> list[str]:
    mine = {p[len("agreement/"):]: data for p, data in members.items() if p.startswith("agreement/")}
    if not mine:
        return []
    try:
        from shoumi_verify.agreement import describe  # the agreement part (collector/agreements)
    except ImportError:
        return []
    return list(describe(mine, "zh"))


def _hr_lines(case: Mapping[str, Any], described: list[str]) -> list[str]:
    current: dict[str, Mapping[str, Any]] = {}
    for r in case.get("hr_records") or []:
        current[str(r.get("kind"))] = r
    out = []
    loss = current.get("loss", {}).get("data") or {}
    if loss:
        out.append(f"登记的损失：{loss.get('amount_yuan') or loss.get('amount_fen', '—')}（{loss.get('kind', '—')}）")
    agreement = current.get("agreement", {}).get("data") or {}
    if "agreement_record_id" in agreement and described:
        out.append("保密协议（登记册记录 #{}）：{}".format(agreement["agreement_record_id"], "；".join(described)))
    elif agreement:
        out.append(f"保密协议：版本 {agreement.get('version', '—')}，签署于 {agreement.get('signed_at', '—')}，"
                   f"文本 SHA-256 {str(agreement.get('document_sha256', '—'))[:16]}…")
    notice = current.get("notice", {}).get("data") or {}
    if notice:
        out.append(f"书面通知：{notice.get('served_at', '—')} 送达（{notice.get('method', '—')}）")
    return out or ["人力资源尚未登记损失、协议或通知。"]


def report_pdf(members: Mapping[str, bytes], *, checked: Sequence[str] = ()) -> bytes:
    """The report as an A4 PDF (Chinese), from the bundle's members and what shoumi-verify found at export."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    if "STSong-Light" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    body = ParagraphStyle("body", fontName="STSong-Light", fontSize=10, leading=15, wordWrap="CJK")
    small = ParagraphStyle("small", parent=body, fontSize=8.5, leading=12)
    head = ParagraphStyle("head", parent=body, fontSize=12.5, leading=20, spaceBefore=8)
    title = ParagraphStyle("title", parent=body, fontSize=16, leading=24, alignment=1)

    def p(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), style)

    doc_case = _load(members, "case.json", {})
    case = doc_case.get("case") or {}
    events = _load(members, "events.json", [])
    heads = _load(members, "tree/heads.json", {})
    cosigs = _load(members, "witness/cosignatures.json", [])
    collector = _load(members, "keys/collector.json", {})
    agents = _load(members, "keys/agents.json", {})
    story: list[Any] = [p("守密（Shoumi）案件证据报告", title), p("供劳动争议仲裁使用", small), Spacer(1, 4 * mm)]
    story.append(p("一、案件概况", head))
    story += [p(f"案件编号：{case.get('id')}　标题：{case.get('title', '')}"),
              p(f"当前状态：{_STATES.get(str(case.get('state')), case.get('state'))}　涉及员工账号：{case.get('subject_user') or '—'}"),
              p(f"立案人：{case.get('created_by')}　立案时间：{_when(case.get('created_at_ns'))}（北京时间）"),
              p(f"依据的告警：{len(doc_case.get('alerts') or [])} 条；记录的终端事件：{len(events)} 个。")]
    for a in doc_case.get("alerts") or []:
        story.append(p(f"· 告警 #{a.get('id')}（{a.get('rule')}，{a.get('severity')}）：{a.get('summary')}", small))
    story += [p("二、人力资源记录", head), *[p(x) for x in _hr_lines(doc_case, _agreement_description(members))]]
    files = doc_case.get("attachments") or []
    if files:
        story.append(p("三、损失文件与附件", head))
        story += [p(f"· {f.get('display_name')}（{f.get('size')} 字节，SHA-256 {f.get('sha256')}），"
                    f"{f.get('uploaded_by')} 于 {_when(f.get('uploaded_at_ns'))} 上传", small) for f in files]
    handoffs = _load(members, "payroll/handoffs.json", [])
    if handoffs:
        last = handoffs[-1]
        sched = last.get("schedule") or {}
        story.append(p("薪资移交", head))
        story.append(p(f"第 {last.get('number')} 次移交：{last.get('state')}，{last.get('sent_by')} 于 "
                       f"{_when(last.get('created_at_ns'))} 发出。"))
        for line in (sched.get("lines") or [])[:60]:
            if isinstance(line, dict):
                story.append(p(f"· {line.get('period')}：扣除 {_yuan(line.get('deduction_fen'))} 元（{line.get('state')}）",
                               small))
        if isinstance(sched.get("remaining_fen"), int):
            story.append(p(f"尚待扣回：{_yuan(sched['remaining_fen'])} 元", small))
    story.append(p("四、时间线（北京时间）", head))
    rows = _timeline(doc_case, events)
    for at, what, detail in rows[:MAX_TIMELINE]:
        story.append(p(f"{_when(at)}　{what}　{detail}", small))
    if len(rows) > MAX_TIMELINE:
        story.append(p(f"……另有 {len(rows) - MAX_TIMELINE} 条，见证据包 events.json 与 case.json。", small))
    story.append(p("五、可以核验什么，如何核验", head))
    latest = (heads.get("heads") or [{}])[-1]
    witnessed = sorted({str(c.get("witness")) for c in cosigs})
    story += [
        p("1. 终端签名：每个事件都包含在终端用其私钥（Ed25519）签名的批次中。证据包保存批次的原始字节和签名；"
          f"任何一个字节被改动，签名即失效。涉及终端：{', '.join(sorted(agents)) or '—'}，其公钥由收集器 CA 证书证明。"),
        p("2. 哈希链：同一终端的相邻批次彼此以 SHA-256 哈希相连，删除、插入或调换批次都会使链条断裂。"),
        p("3. 默克尔树（RFC 9162，与证书透明度相同）：收集器把保存的每个批次作为叶子写入默克尔树，并定期签署树头。"
          "证据包给出每个批次的包含证明，以及较早树头到最新树头的一致性证明：历史一旦被改写，证明即无法通过。"
          f"最新树头覆盖 {latest.get('tree_size', '—')} 个批次，签署于 {_when(latest.get('timestamp_ns'))}。"),
        p("4. 见证者副署：" + (f"独立见证者（{', '.join(witnessed)}）对树头进行了副署。见证者只在新树头与其上次副署的树头一致时才签名，"
                              "因此收集器的运营方即使掌握数据库和收集器密钥，也无法在不被发现的情况下改写已被见证的历史。"
                              if witnessed else "本证据包中的树头没有见证者副署，历史的可信度仅依赖收集器自己的密钥。")),
        p("5. 清单签名：证据包中每个文件的 SHA-256 与大小都列在 manifest.json 中，并由收集器密钥签名"
          f"（密钥标识 {str(collector.get('key_id', '—'))[:16]}…）。本报告本身也列在清单中。"),
        p("6. 审计记录：案件的每一步操作（谁、何时、做了什么）都有链式哈希的审计记录，一并附在证据包中。"),
        p("核验方法：在任何一台电脑上安装 shoumi-verify，离线运行 “shoumi-verify 证据包.zip”。全部通过时程序返回 0 并输出"
          "“结论：全部验证通过”；否则返回 1，并指出第一处不成立的地方。若另行取得见证者或收集器的公钥（例如由审计方或公证处保管），"
          "请以 --witness-key 或 --collector-key 提供，这样才能证明证据包确实出自该收集器、其历史已被独立见证。"),
        *([p("导出时，收集器已用同一验证程序（shoumi-verify）核验本证据包，结果如下：", body)]
          + [p(f"√ {line}", small) for line in checked] if checked else []),
        p("六、说明", head),
        p("本系统只记录和保全证据，不作任何处理决定。是否认定违约、是否扣款，均由公司的安全、人力资源人员分别审查确认"
          "（双人复核），员工有权申诉（《个人信息保护法》第二十四条）。扣款须遵守工资支付的法定限制。"),
    ]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, title=f"案件 {case.get('id')} 证据报告", author="Shoumi",
                            leftMargin=18 * mm, rightMargin=18 * mm, topMargin=18 * mm, bottomMargin=18 * mm)
    doc.build(story)
    return buffer.getvalue()
