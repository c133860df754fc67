"""The collector's transparency log: stored batches become Merkle leaves under signed tree heads.

``TreeHeadSigner.sign_if_grown()`` is called periodically by ``serve``: it appends every stored
batch that is no leaf yet (in row order), signs the new root with the collector's tree-head key and
stores leaves and head in one transaction. Before it extends the tree it recomputes the root of the
leaves already stored and refuses (``TreeInconsistent``) if that no longer matches its own last
head, so it never signs over a log someone rewrote. Several collector processes on one PostgreSQL
may race; the store lets exactly one of them extend the tree, the others try again next time.

The key (Ed25519, PKCS#8 PEM) lives in ``DATA_DIR/tree-head.key``, made on first use with mode
0600 by an atomic create-if-absent (write a temporary file, fsync, hard-link into place, fsync the
directory), so two processes starting together end up with the same key. Never logs key material.

Errors::

    TransparencyError
     ├── TreeKeyError       (the key file is unreadable, not a key, or readable by others)
     └── TreeInconsistent   (the stored leaves no longer match the last signed head)
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.domain.evidence import SignedTreeHead, TreeLeaf, batch_leaf_hash, sign_tree_head
from collector.domain.merkle import EMPTY_ROOT, TreeBuilder
from collector.storage.base import ChainConflict, Store, TreeArea

__all__ = [
    "TREE_KEY_FILE",
    "TransparencyError",
    "TreeKeyError",
    "TreeInconsistent",
    "TreeHeadSigner",
    "load_tree_key",
    "load_or_create_tree_key",
    "tree_public_key",
]

log = logging.getLogger("shoumi.collector.transparency")

TREE_KEY_FILE = "tree-head.key"
_PAGE = 1000


class TransparencyError(Exception):
    """Base of the tamper-evidence errors."""


class TreeKeyError(TransparencyError):
    """The tree-head key cannot be used."""


class TreeInconsistent(TransparencyError):
    """The stored leaves do not reproduce the last signed head: the log was changed."""


def load_tree_key(data_dir: Path) -> Ed25519PrivateKey:
    """Loads the tree-head key from the data directory; raises TreeKeyError if it is unusable."""
    path = Path(data_dir) / TREE_KEY_FILE
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TreeKeyError(f"{path} is accessible to other users (mode {stat.S_IMODE(mode):o}); chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TreeKeyError(f"cannot read the tree-head key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise TreeKeyError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TreeKeyError(f"{path} is not an Ed25519 key")
    return key


def load_or_create_tree_key(data_dir: Path) -> Ed25519PrivateKey:
    """Loads the tree-head key, creating it (0600, atomically) if there is none yet."""
    directory = Path(data_dir)
    path = directory / TREE_KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = directory / f".{TREE_KEY_FILE}.{os.getpid()}.{time.time_ns()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made the key first: then we use theirs
            log.warning("created the tree-head signing key %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return load_tree_key(directory)


def tree_public_key(key: Ed25519PrivateKey) -> bytes:
    """Returns the raw 32-byte public key that verifies the collector's tree heads."""
    return key.public_key().public_bytes_raw()


class TreeHeadSigner:
    """Extends the Merkle tree over stored batches and signs its heads."""

    def __init__(
        self,
        store: Store,
        key: Ed25519PrivateKey,
        *,
        clock: Callable[[], int] = time.time_ns,
        max_leaves_per_head: int = 100_000,
    ) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.max_leaves_per_head = max_leaves_per_head
        self._builder: TreeBuilder | None = None  # the tree as of the last head we saw
        # gives the latest head to the witnesses (collector/evidence/witnesses.py); None: no witnesses
        self.witnesses: Callable[[], object] | None = None

    def sign_and_witness(self) -> SignedTreeHead | None:
        """Signs a new head if the tree grew, then gives the latest head to every witness behind it."""
        head = self.sign_if_grown()
        if self.witnesses is not None:
            try:
                self.witnesses()
            except Exception:  # a witness or the store away must not stop signing: tried again next time
                log.exception("giving the tree head to the witnesses failed")
        return head

    def sign_if_grown(self) -> SignedTreeHead | None:
        """Signs a new tree head if batches were stored since the last one; returns it, or None."""
        try:
            with self.store.transaction() as tx:
                return self._sign_if_grown(tx)
        except ChainConflict:
            log.info("another collector extended the tree first; trying again next time")
            return None

    def _sign_if_grown(self, tx: TreeArea) -> SignedTreeHead | None:
        latest = tx.latest_tree_head()
        size = 0 if latest is None else latest.tree_size
        builder = self._builder
        if builder is None or builder.size != size or builder.root() != (EMPTY_ROOT if latest is None else latest.root_hash):
            builder = self._rebuild(tx, latest)
        new = list(tx.batches_outside_tree(limit=self.max_leaves_per_head))
        if not new:
            self._builder = builder
            return None
        self._builder = None  # until the new head is stored, our copy is ahead of the store
        leaves = []
        for offset, row in enumerate(new):
            digest = batch_leaf_hash(row.batch.canonical, row.batch.signature)
            builder.append(digest)
            leaves.append(TreeLeaf(size + offset, row.row_id, digest))
        timestamp = max(self.clock(), 0 if latest is None else latest.timestamp_ns)
        head = sign_tree_head(self.key, tree_size=builder.size, root_hash=builder.root(), timestamp_ns=timestamp)
        tx.add_tree_head(head, leaves, previous_size=size)
        self._builder = builder
        log.info("signed tree head: %d leaves, root %s", head.tree_size, head.root_hash.hex())
        return head

    def _rebuild(self, tx: TreeArea, latest: SignedTreeHead | None) -> TreeBuilder:
        builder = TreeBuilder()
        while True:
            page = tx.list_tree_leaves(start=builder.size, limit=_PAGE)
            for leaf in page:
                if leaf.leaf_index != builder.size:
                    raise TreeInconsistent(f"leaf {builder.size} is missing from the stored tree")
                builder.append(leaf.leaf_hash)
            if len(page) < _PAGE:
                break
        size = 0 if latest is None else latest.tree_size
        root = EMPTY_ROOT if latest is None else latest.root_hash
        if builder.size != size or builder.root() != root:
            raise TreeInconsistent(
                f"the stored tree has {builder.size} leaves and does not reproduce the signed head of "
                f"{size} leaves; run `shoumi-collector verify` and investigate before signing more"
            )
        return builder
