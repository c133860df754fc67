"""Removable media: which mounts count as removable now, and what changed since the last look.

A mount is removable when sysfs says so for its block device (``removable`` is 1 on the disk, or
the device sits below a USB controller) or when the policy declares its path in
``removable_mounts``. A declared path that is not a mount point but an existing directory counts
as mounted too: that is how tests and odd setups (a loop image, a FUSE mount, a plain folder)
stand in for a stick. ``RemovableMountTracker.poll()`` returns the difference since the last
poll as ``MountChange`` records; the caller turns them into ``usb.mount``/``usb.unmount`` and
starts or stops watching the mount point.

A mount's USB identity (``usb_identity``: vendor id, product id and serial) is read from sysfs by
walking up from its block device (``/sys/class/block/<dev>``) to the USB device that has
``idVendor`` and ``idProduct``; what the kernel does not give is left empty (a SATA disk has no USB
ids, many cheap sticks no serial). The policy's ``company_devices`` are matched against it.
The label comes from /dev/disk/by-label (udev), else from the filesystem's superblock (ext2/3/4,
FAT: its first 2 KiB, read once per mount; no blkid).

The diff is pure (``removable_mounts``, ``diff_mounts``); the partition list, the sysfs question,
the USB identity and the label lookup are functions passed in (the sysfs root is a parameter), so
tests give a fake sysfs tree and the agent the real ones (psutil, /sys, /dev/disk/by-label). This module must never mount, unmount or write anything,
and never read the files on the media.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Protocol, Sequence

__all__ = [
    "MountChange",
    "PartitionLike",
    "RemovableMount",
    "RemovableMountTracker",
    "diff_mounts",
    "label_from_superblock",
    "label_of_device",
    "psutil_partitions",
    "removable_mounts",
    "sysfs_is_removable",
    "usb_identity",
]


class PartitionLike(Protocol):
    """What is needed of a partition: psutil's ``sdiskpart`` has these fields."""

    @property
    def device(self) -> str: ...

    @property
    def mountpoint(self) -> str: ...

    @property
    def fstype(self) -> str: ...


@dataclass(frozen=True)
class RemovableMount:
    """A mounted removable medium (or a declared stand-in for one)."""

    mountpoint: str
    device: str = ""  # "" for a declared plain directory
    fstype: str = ""
    label: str = ""
    declared: bool = False  # named in the policy's removable_mounts
    vendor_id: str = ""  # USB idVendor, 4 lowercase hex digits, "" when not a USB device
    product_id: str = ""  # USB idProduct
    serial: str = ""  # USB serial, "" when the device has none

    def identity(self) -> dict[str, str]:
        """The USB ids and label that are known (absent ones left out), for usb.* events."""
        found = {"vendor_id": self.vendor_id, "product_id": self.product_id, "serial": self.serial,
                 "label": self.label}
        return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class MountChange:
    """One difference between two polls."""

    kind: Literal["mounted", "unmounted"]
    mount: RemovableMount


def psutil_partitions() -> list[PartitionLike]:
    """The real partition list: mounted physical devices (psutil, ``all=False``)."""
    import psutil

    return list(psutil.disk_partitions(all=False))


def _block_name(device: str, dev_root: str) -> str:
    """``/dev/sdb1`` (or a symlink to it, e.g. /dev/disk/by-uuid/...) -> ``sdb1``."""
    if not device.startswith("/"):
        return ""
    real = os.path.realpath(device)
    if dev_root != "/dev" and not real.startswith(dev_root + "/"):
        real = os.path.join(dev_root, os.path.basename(real))
    return os.path.basename(real)


def sysfs_is_removable(device: str, *, sys_root: str = "/sys", dev_root: str = "/dev") -> bool:
    """Tells whether sysfs calls the device's disk removable or places it below a USB bus."""
    name = _block_name(device, dev_root)
    if not name:
        return False
    node = os.path.join(sys_root, "class", "block", name)
    try:
        real = os.path.realpath(node)
    except OSError:
        return False
    if not os.path.exists(real):
        return False
    if "/usb" in real:
        return True
    disk = os.path.dirname(real) if os.path.exists(os.path.join(real, "partition")) else real
    try:
        with open(os.path.join(disk, "removable"), "rb") as f:
            return f.read().strip() == b"1"
    except OSError:
        return False


def _read_attr(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name), "rb") as f:
            return f.read(256).decode("utf-8", "replace").strip().replace("\x00", "")
    except OSError:
        return ""


def usb_identity(device: str, *, sys_root: str = "/sys", dev_root: str = "/dev") -> dict[str, str]:
    """The USB vendor id, product id and serial of the device a block device sits on ({} if none)."""
    name = _block_name(device, dev_root)
    if not name:
        return {}
    root = os.path.realpath(sys_root)
    try:
        node = os.path.realpath(os.path.join(sys_root, "class", "block", name))
    except OSError:
        return {}
    # partition -> disk -> scsi ... -> USB interface -> USB device (the first with idVendor)
    while node.startswith(root + "/") and node != root:
        vendor = _read_attr(node, "idVendor")
        if vendor:
            found = {"vendor_id": vendor.lower(), "product_id": _read_attr(node, "idProduct").lower(),
                     "serial": _read_attr(node, "serial")}
            return {k: v for k, v in found.items() if v}
        node = os.path.dirname(node)
    return {}


def label_of_device(device: str, *, by_label: str = "/dev/disk/by-label") -> str:
    """The filesystem label udev published for the device, else the one in its superblock, or ""."""
    try:
        names = os.listdir(by_label)
    except OSError:
        names = []
    target = os.path.realpath(device)
    for name in names:
        if os.path.realpath(os.path.join(by_label, name)) == target:
            # udev escapes unsafe characters as \xNN.
            return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)
    return label_from_superblock(device)


def label_from_superblock(device: str) -> str:
    """The volume label an ext2/3/4 or FAT12/16/32 filesystem keeps in its first 2 KiB, or "".

    Where there is no udev (containers, minimal systems) and no blkid: the agent reads those bytes
    of the device once per mount, never a file on it."""
    if not device.startswith("/"):
        return ""
    try:
        with open(device, "rb") as f:
            head = f.read(2048)
    except OSError:
        return ""
    if len(head) >= 1160 and head[1080:1082] == b"\x53\xef":  # ext2/3/4 magic 0xEF53 at 1024 + 56
        raw, encoding = head[1144:1160], "utf-8"  # s_volume_name at 1024 + 120
    elif len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[82:87] == b"FAT32":
        raw, encoding = head[71:82], "cp437"
    elif len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[54:59] in (b"FAT12", b"FAT16"):
        raw, encoding = head[43:54], "cp437"
    else:
        return ""
    text = raw.split(b"\x00")[0].decode(encoding, "replace").strip()
    return "" if text == "NO NAME" else text


def _normal(path: str) -> str:
    return "/" + os.path.normpath(path).lstrip("/")


def removable_mounts(
    partitions: Iterable[PartitionLike],
    declared: Sequence[str],
    *,
    is_removable: Callable[[str], bool],
    label_of: Callable[[str], str] = lambda device: "",
    is_dir: Callable[[str], bool] = os.path.isdir,
    identity_of: Callable[[str], Mapping[str, str]] = lambda device: {},
) -> dict[str, RemovableMount]:
    """Returns the removable mounts now, keyed by mount point."""
    declared_set = {_normal(p) for p in declared}
    found: dict[str, RemovableMount] = {}
    for part in partitions:
        mountpoint = _normal(part.mountpoint)
        is_declared = mountpoint in declared_set
        if is_declared or is_removable(part.device):
            ids = identity_of(part.device)
            found[mountpoint] = RemovableMount(
                mountpoint, part.device, part.fstype, label_of(part.device), is_declared,
                vendor_id=ids.get("vendor_id", ""), product_id=ids.get("product_id", ""),
                serial=ids.get("serial", ""),
            )
    for path in sorted(declared_set - set(found)):
        if is_dir(path):
            found[path] = RemovableMount(path, declared=True)
    return found


def diff_mounts(
    before: Mapping[str, RemovableMount], after: Mapping[str, RemovableMount]
) -> list[MountChange]:
    """Returns unmounts, then mounts; a mount point whose medium changed is both."""
    changes = [
        MountChange("unmounted", mount)
        for point, mount in sorted(before.items())
        if after.get(point) != mount
    ]
    changes += [
        MountChange("mounted", mount)
        for point, mount in sorted(after.items())
        if before.get(point) != mount
    ]
    return changes


class RemovableMountTracker:
    """Polls for removable mounts; ``poll()`` returns what was mounted or unmounted since."""

    def __init__(
        self,
        *,
        declared: Sequence[str] = (),
        partitions: Callable[[], Iterable[PartitionLike]] = psutil_partitions,
        is_removable: Callable[[str], bool] = sysfs_is_removable,
        label_of: Callable[[str], str] = label_of_device,
        identity_of: Callable[[str], Mapping[str, str]] = usb_identity,
    ) -> None:
        self._declared = tuple(declared)
        self._partitions = partitions
        self._is_removable = is_removable
        self._label_of = label_of
        self._identity_of = identity_of
        self._current: dict[str, RemovableMount] = {}
        self._labels: dict[str, str] = {}
        self._ids: dict[str, Mapping[str, str]] = {}

    def set_declared(self, declared: Sequence[str]) -> None:
        """Takes a new policy's removable_mounts; the next poll reports the difference."""
        self._declared = tuple(declared)  # one assignment: the poller sees old or new

    def current(self) -> tuple[RemovableMount, ...]:
        """The removable mounts as of the last poll, by mount point."""
        return tuple(self._current[p] for p in sorted(self._current))

    def poll(self) -> list[MountChange]:
        """Looks again; the first poll reports every removable mount present as mounted.

        A device's label and USB ids are read once while it stays in the partition list."""
        partitions = list(self._partitions())
        present = {p.device for p in partitions}
        self._labels = {d: v for d, v in self._labels.items() if d in present}
        self._ids = {d: v for d, v in self._ids.items() if d in present}

        def label(device: str) -> str:
            if device not in self._labels:
                self._labels[device] = self._label_of(device)
            return self._labels[device]

        def ids(device: str) -> Mapping[str, str]:
            if device not in self._ids:
                self._ids[device] = self._identity_of(device)
            return self._ids[device]

        now = removable_mounts(
            partitions, self._declared, is_removable=self._is_removable, label_of=label, identity_of=ids,
        )
        changes = diff_mounts(self._current, now)
        self._current = now
        return changes
