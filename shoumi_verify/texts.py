"""The verifier's report texts, in English and Chinese, by check code. ``text(code, lang, **detail)``."""

from __future__ import annotations

from typing import Any

__all__ = ["TEXTS", "text"]

# code -> (English, Chinese); {names} are filled from the check's details
TEXTS: dict[str, tuple[str, str]] = {
    # passed checks: what was verified and how
    "ok.archive": ("The file is a readable zip of {members} plain files ({bytes} bytes), with no unsafe names",
                   "文件是可读的 zip 包，含 {members} 个普通文件（{bytes} 字节），没有不安全的文件名"),
    "ok.manifest": ("The manifest lists {members} members and is signed (Ed25519) by the collector key {key_id}",
                    "清单列出 {members} 个文件，并由收集器密钥 {key_id} 签名（Ed25519）"),
    "ok.members": ("Every member is present with the SHA-256 and size the manifest gives; nothing extra",
                   "每个文件都存在，SHA-256 与大小与清单一致；没有多余文件"),
    "ok.collector_key": ("The collector key is the one given on the command line ({source})",
                         "收集器密钥与命令行给出的一致（{source}）"),
    "ok.collector_key_bundle": ("The collector key is taken from the bundle itself: this proves integrity, not who "
                                "made it (give --tree-head, --collector-key or --witness-key from elsewhere)",
                                "收集器密钥取自证据包本身：这只证明内容未被改动，不证明由谁制作（请另行提供 "
                                "--tree-head、--collector-key 或 --witness-key）"),
    "ok.certs": ("{agents} agent key certificate(s) are issued by the collector CA \"{ca}\" and carry the agents' keys",
                 "{agents} 个终端密钥证书由收集器 CA“{ca}”签发，且包含各终端的公钥"),
    "ok.batches": ("{batches} signed batch(es) of {agents} agent(s): each agent's Ed25519 signature verifies over the "
                   "exact bytes it signed", "{batches} 个已签名批次（{agents} 个终端）：每个终端的 Ed25519 签名对其签名的原始字节验证通过"),
    "ok.chain": ("The per-agent hash chain holds: {links} link(s) between adjacent batches checked, {starts} epoch "
                 "start(s) name the genesis hash", "终端哈希链完整：检查了相邻批次之间的 {links} 个链接，{starts} 个纪元起点指向创世哈希"),
    "ok.events": ("{events} event(s) of the case are each, field by field, in a signed batch of the bundle",
                  "案件的 {events} 个事件逐字段与证据包中已签名批次的内容一致"),
    "ok.events_not_stored": ("{count} event(s) the alerts name are no longer stored (retention deleted them)",
                             "告警提到的 {count} 个事件已不再保存（已按保留期限删除）"),
    "ok.heads": ("{heads} signed tree head(s) verify under the collector key (the latest covers {latest} batches, "
                 "signed {time})", "{heads} 个签名树头在收集器密钥下验证通过（最新的覆盖 {latest} 个批次，签于 {time}）"),
    "ok.inclusion": ("Every batch is a leaf of the Merkle tree of {size} leaves (RFC 9162 inclusion proofs)",
                     "每个批次都是 {size} 个叶子的 Merkle 树中的叶子（RFC 9162 包含证明）"),
    "ok.consistency": ("{proofs} consistency proof(s) show the earlier heads are prefixes of the latest: nothing "
                       "was rewritten between them", "{proofs} 个一致性证明表明较早的树头是最新树头的前缀：其间的历史未被改写"),
    "ok.external_head": ("The tree head given with --tree-head ({size} leaves) is in the bundle's history",
                         "--tree-head 给出的树头（{size} 个叶子）属于证据包的历史"),
    "ok.witnesses": ("{count} witness cosignature(s) verify ({names}); {trusted}",
                     "{count} 个见证者副署验证通过（{names}）；{trusted_zh}"),
    "ok.no_witness": ("No witness cosigned these heads: the history rests on the collector's key alone",
                      "没有见证者副署这些树头：历史仅依赖收集器自己的密钥"),
    "ok.audit": ("{rows} audit row(s) of the case each reproduce their SHA-256 chain hash",
                 "案件的 {rows} 条审计记录各自的 SHA-256 链式哈希均可复现"),
    "ok.attachments": ("{count} loss document(s) and file(s) match the SHA-256 and size recorded on the case",
                       "{count} 个损失文件及附件与案件记录的 SHA-256 和大小一致"),
    "ok.agreement": ("The agreement: {summary}", "保密协议：{summary}"),
    "ok.no_agreement": ("No agreement on record in this bundle", "本证据包中没有保密协议记录"),
    "ok.agreement_unchecked": ("The agreement's members are listed in the manifest; this verifier has no agreement "
                               "checker, so only their hashes were checked", "保密协议文件已在清单中；此验证程序没有协议检查模块，只核对了哈希"),
    "result.ok": ("RESULT: everything holds", "结论：全部验证通过"),
    "result.fail": ("RESULT: FAILED at {code}", "结论：验证失败，位置 {code}"),
    # failures: the first thing that does not hold
    "archive.unreadable": ("the bundle cannot be read: {reason}", "无法读取证据包：{reason}"),
    "archive.too_large": ("the file is {size} bytes, more than the {limit} a bundle may be",
                          "文件有 {size} 字节，超过证据包上限 {limit}"),
    "archive.not_zip": ("the file is not a zip archive ({reason})", "该文件不是 zip 压缩包（{reason}）"),
    "archive.too_many": ("the zip has {count} entries, more than {limit}", "zip 包含 {count} 个条目，超过上限 {limit}"),
    "archive.unsafe_name": ("the zip holds an unsafe name {name!r} (absolute, '..', backslash or control character)",
                            "zip 中有不安全的文件名 {name!r}（绝对路径、'..'、反斜杠或控制字符）"),
    "archive.duplicate": ("the zip holds the name {name!r} twice", "zip 中文件名 {name!r} 出现了两次"),
    "archive.not_file": ("{name!r} is not a plain file (a directory or a link)", "{name!r} 不是普通文件（目录或链接）"),
    "archive.encrypted": ("{name!r} is encrypted", "{name!r} 已加密"),
    "archive.bomb": ("the zip looks like a zip bomb at {name!r}: {reason}", "zip 疑似压缩炸弹（{name!r}）：{reason}"),
    "archive.corrupt": ("{name!r} is damaged: {reason}", "{name!r} 已损坏：{reason}"),
    "manifest.missing": ("the bundle has no {name}", "证据包缺少 {name}"),
    "manifest.invalid": ("the manifest is not a valid bundle manifest: {reason}", "清单格式无效：{reason}"),
    "manifest.key": ("keys/collector.json does not name the key that signed the manifest ({reason})",
                     "keys/collector.json 与签署清单的密钥不符（{reason}）"),
    "manifest.signature": ("the manifest's signature does not verify under the collector key {key_id}",
                           "清单签名在收集器密钥 {key_id} 下验证失败"),
    "collector_key.mismatch": ("the bundle is signed by collector key {bundle}, not by the key given ({given})",
                               "证据包由收集器密钥 {bundle} 签名，而不是所给的密钥（{given}）"),
    "member.missing": ("the manifest names {path!r}, which is not in the zip", "清单列出的 {path!r} 不在 zip 中"),
    "member.hash": ("{path!r} was changed: its SHA-256 or size differs from the manifest",
                    "{path!r} 已被改动：SHA-256 或大小与清单不符"),
    "member.extra": ("{path!r} is in the zip but not in the manifest", "{path!r} 在 zip 中但不在清单里"),
    "member.duplicate": ("the manifest names {path!r} twice", "清单中 {path!r} 出现了两次"),
    "member.invalid": ("{path!r} is not what it should be: {reason}", "{path!r} 内容格式不正确：{reason}"),
    "cert.ca": ("certs/ca.pem is not a CA certificate that signs itself: {reason}", "certs/ca.pem 不是自签名的 CA 证书：{reason}"),
    "cert.agent": ("the certificate of agent {agent} does not chain to the CA: {reason}",
                   "终端 {agent} 的证书无法链接到 CA：{reason}"),
    "batch.decode": ("batch {file} is not a canonical signed batch: {reason}", "批次 {file} 不是规范的已签名批次：{reason}"),
    "batch.meta": ("batches.json says {field} is {listed} for {file}, the signed bytes say {signed}",
                   "batches.json 称 {file} 的 {field} 为 {listed}，签名内容却是 {signed}"),
    "batch.agent": ("batch {file} names agent {agent}, whose key is not in the bundle", "批次 {file} 所属终端 {agent} 的公钥不在证据包中"),
    "batch.signature": ("the agent's signature on batch {file} (agent {agent}, seq {seqs}) does not verify: the "
                        "batch was changed after the agent signed it", "批次 {file}（终端 {agent}，序号 {seqs}）的终端签名验证失败：批次在签名后被改动"),
    "chain.link": ("batch {file} (seq {seqs}) does not name the hash of the batch before it ({prev}): the chain is broken",
                   "批次 {file}（序号 {seqs}）没有指向前一批次（{prev}）的哈希：哈希链断裂"),
    "chain.genesis": ("batch {file} starts epoch {epoch} without the genesis hash", "批次 {file} 开始纪元 {epoch} 却没有指向创世哈希"),
    "chain.overlap": ("batches {file} and {other} claim the same sequence numbers", "批次 {file} 与 {other} 声称相同的序号"),
    "event.invalid": ("event #{index} in events.json is malformed: {reason}", "events.json 中第 {index} 个事件格式错误：{reason}"),
    "event.unsigned": ("event {agent}/{epoch}/{seq} is in no signed batch of the bundle", "事件 {agent}/{epoch}/{seq} 不在证据包的任何已签名批次中"),
    "event.field": ("event {agent}/{epoch}/{seq}: {field} is {stored!r} as stored, the signed batch says {signed!r}",
                    "事件 {agent}/{epoch}/{seq}：保存的 {field} 为 {stored!r}，已签名批次中为 {signed!r}"),
    "event.order": ("events.json is out of order at {agent}/{epoch}/{seq} (events were reordered or repeated)",
                    "events.json 在 {agent}/{epoch}/{seq} 处顺序错乱（事件被重排或重复）"),
    "event.missing": ("alert {alert} names event {event}, which is not in the bundle: an event was removed",
                      "告警 {alert} 提到的事件 {event} 不在证据包中：有事件被删除"),
    "tree.head_signature": ("the tree head of {size} leaves is not signed by the collector key", "{size} 个叶子的树头不是收集器密钥签的"),
    "tree.heads": ("tree/heads.json is inconsistent: {reason}", "tree/heads.json 自相矛盾：{reason}"),
    "tree.inclusion": ("batch {file} (leaf {leaf}) is not in the signed tree of {size} leaves: its inclusion proof fails",
                       "批次 {file}（叶子 {leaf}）不在 {size} 个叶子的已签名树中：包含证明失败"),
    "tree.consistency": ("the head of {old} leaves is not a prefix of the head of {new}: history was rewritten",
                         "{old} 个叶子的树头不是 {new} 个叶子树头的前缀：历史被改写"),
    "tree.external": ("the tree head given with --tree-head ({size} leaves): {reason}", "--tree-head 给出的树头（{size} 个叶子）：{reason}"),
    "witness.unknown": ("the cosignature of {witness} on {size} leaves names a witness key that is not known",
                        "{witness} 对 {size} 个叶子的副署所用的见证者密钥未知"),
    "witness.signature": ("the cosignature of {witness} on the head of {size} leaves does not verify",
                          "{witness} 对 {size} 个叶子树头的副署验证失败"),
    "witness.head": ("the cosignature of {witness} is on a head of {size} leaves the bundle does not carry, or on another root",
                     "{witness} 的副署针对的是证据包中没有的 {size} 个叶子树头，或另一个根哈希"),
    "witness.required": ("no valid cosignature by the witness key given with --witness-key ({key_id}) on any head of the bundle",
                         "证据包中没有任何树头带有 --witness-key 所给见证者密钥（{key_id}）的有效副署"),
    "audit.row": ("audit row {id} does not reproduce its hash: it was changed after it was written",
                  "审计记录 {id} 的哈希无法复现：写入后被改动"),
    "audit.link": ("audit row {id} does not name the hash of row {prev}, just before it", "审计记录 {id} 没有指向紧邻的前一条记录 {prev} 的哈希"),
    "attachment.missing": ("the case's file {name!r} ({sha256}) is not in the bundle", "案件文件 {name!r}（{sha256}）不在证据包中"),
    "attachment.hash": ("the case's file {name!r} does not have the SHA-256 and size the case records",
                        "案件文件 {name!r} 的 SHA-256 和大小与案件记录不符"),
    "agreement.problem": ("the agreement does not hold: {problem}", "保密协议验证失败：{problem}"),
    "usage": ("{reason}", "{reason}"),
}


def text(key: str, lang: str, **detail: Any) -> str:
    """The text of check ``key`` in ``lang`` (zh or en), filled with the details."""
    en, zh = TEXTS.get(key, (key, key))
    template = zh if lang == "zh" else en
    try:
        return template.format(**detail)
    except (KeyError, IndexError, ValueError):
        return f"{template} {detail}"
