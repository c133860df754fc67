"""Removable mounts: the pure diff over fake partition lists, sysfs on a real tree, a declared
plain directory, and an ext4 loop image declared removable (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.sources.removable import (
    MountChange,
    RemovableMount,
    RemovableMountTracker,
    diff_mounts,
    label_of_device,
    psutil_partitions,
    removable_mounts,
    sysfs_is_removable,
)


@dataclass(frozen=True)
class Part:
    device: str
    mountpoint: str
    fstype: str


class FakeMachine:
    """A partition table the test edits, and the devices it calls removable."""

    def __init__(self) -> None:
        self.parts: list[Part] = [Part("/dev/vda", "/", "ext4")]
        self.removable: set[str] = set()

    def partitions(self) -> list[Part]:
        return list(self.parts)

    def is_removable(self, device: str) -> bool:
        return device in self.removable

    def plug(self, device: str, mountpoint: str, fstype: str = "vfat") -> None:
        self.removable.add(device)
        self.parts.append(Part(device, mountpoint, fstype))

    def unplug(self, mountpoint: str) -> None:
        self.parts = [p for p in self.parts if p.mountpoint != mountpoint]


def tracker_for(machine: FakeMachine, declared: tuple[str, ...] = ()) -> RemovableMountTracker:
    return RemovableMountTracker(
        declared=declared, partitions=machine.partitions, is_removable=machine.is_removable,
        label_of=lambda device: {"/dev/sdb1": "STICK"}.get(device, ""),
    )


def test_plug_and_unplug_are_reported_once() -> None:
    machine = FakeMachine()
    tracker = tracker_for(machine)
    assert tracker.poll() == []
    machine.plug("/dev/sdb1", "/media/alice/STICK")
    stick = RemovableMount("/media/alice/STICK", "/dev/sdb1", "vfat", "STICK")
    assert tracker.poll() == [MountChange("mounted", stick)]
    assert tracker.poll() == []
    assert tracker.current() == (stick,)
    machine.unplug("/media/alice/STICK")
    assert tracker.poll() == [MountChange("unmounted", stick)]
    assert tracker.current() == ()


def test_non_removable_partitions_are_ignored() -> None:
    machine = FakeMachine()
    machine.parts.append(Part("/dev/vdb1", "/data", "ext4"))
    assert tracker_for(machine).poll() == []


def test_first_poll_reports_media_already_present() -> None:
    machine = FakeMachine()
    machine.plug("/dev/sdc1", "/media/b")
    machine.plug("/dev/sdb1", "/media/a")
    assert [c.mount.mountpoint for c in tracker_for(machine).poll()] == ["/media/a", "/media/b"]


def test_another_medium_at_the_same_mount_point_is_unmount_then_mount() -> None:
    machine = FakeMachine()
    tracker = tracker_for(machine)
    machine.plug("/dev/sdb1", "/media/stick")
    tracker.poll()
    machine.unplug("/media/stick")
    machine.plug("/dev/sdc1", "/media/stick", "exfat")
    assert [(c.kind, c.mount.device) for c in tracker.poll()] == [
        ("unmounted", "/dev/sdb1"), ("mounted", "/dev/sdc1"),
    ]


def test_declared_mount_point_counts_even_if_sysfs_says_fixed() -> None:
    machine = FakeMachine()
    machine.parts.append(Part("/dev/loop3", "/media/stick/", "ext4"))
    tracker = tracker_for(machine, declared=("/media/stick",))
    assert tracker.poll() == [
        MountChange("mounted", RemovableMount("/media/stick", "/dev/loop3", "ext4", "", True))
    ]


def test_diff_is_symmetric() -> None:
    a = {"/m": RemovableMount("/m", "/dev/sdb1")}
    assert diff_mounts({}, a) == [MountChange("mounted", a["/m"])]
    assert diff_mounts(a, {}) == [MountChange("unmounted", a["/m"])]
    assert diff_mounts(a, dict(a)) == []


def test_declared_plain_directory_comes_and_goes(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    tracker = RemovableMountTracker(declared=(str(stick),))  # the real psutil and sysfs
    assert all(c.mount.mountpoint != str(stick) for c in tracker.poll())
    stick.mkdir()
    assert tracker.poll() == [MountChange("mounted", RemovableMount(str(stick), declared=True))]
    assert tracker.poll() == []
    stick.rmdir()
    assert tracker.poll() == [MountChange("unmounted", RemovableMount(str(stick), declared=True))]


def test_real_partitions_and_sysfs_answer_without_error() -> None:
    parts = psutil_partitions()
    assert any(p.mountpoint == "/" for p in parts)
    found = removable_mounts(parts, (), is_removable=sysfs_is_removable)
    # Whatever this machine has, the root filesystem is not removable media.
    assert "/" not in found


def make_sysfs(root: Path) -> Path:
    """A sysfs tree as the kernel lays it out: class/block links into devices/."""
    sys_root = root / "sys"
    devices = sys_root / "devices"
    usb_disk = devices / "pci0000:00" / "0000:00:14.0" / "usb2" / "2-1" / "block" / "sdb"
    fixed_disk = devices / "pci0000:00" / "0000:00:17.0" / "ata1" / "block" / "sda"
    card = devices / "platform" / "mmc0" / "block" / "mmcblk0"
    for disk, removable in ((usb_disk, "0"), (fixed_disk, "0"), (card, "1")):
        disk.mkdir(parents=True)
        (disk / "removable").write_text(removable + "\n")
    for disk, part in ((usb_disk, "sdb1"), (fixed_disk, "sda1"), (card, "mmcblk0p1")):
        (disk / part).mkdir()
        (disk / part / "partition").write_text("1\n")
    block = sys_root / "class" / "block"
    block.mkdir(parents=True)
    for disk in (usb_disk, fixed_disk, card):
        (block / disk.name).symlink_to(disk)
        for part in disk.iterdir():
            if part.is_dir():
                (block / part.name).symlink_to(part)
    return sys_root


def test_sysfs_removable_flag_and_usb_path(tmp_path: Path) -> None:
    sys_root = str(make_sysfs(tmp_path))
    dev_root = str(tmp_path / "dev")

    def removable(device: str) -> bool:
        return sysfs_is_removable(device, sys_root=sys_root, dev_root=dev_root)

    assert removable("/dev/sdb1")  # below usb2: a USB stick, even with removable=0
    assert removable("/dev/sdb")
    assert removable("/dev/mmcblk0p1")  # the disk's removable flag is 1
    assert not removable("/dev/sda1")
    assert not removable("/dev/nvme0n1")  # unknown to sysfs
    assert not removable("tmpfs")  # not a device path


def test_real_sysfs_root_disk_is_fixed() -> None:
    root_device = next(p.device for p in psutil_partitions() if p.mountpoint == "/")
    assert not sysfs_is_removable(root_device)


def test_label_from_by_label_links(tmp_path: Path) -> None:
    by_label = tmp_path / "by-label"
    by_label.mkdir()
    (tmp_path / "sdb1").write_text("")
    (by_label / "MY\\x20STICK").symlink_to(tmp_path / "sdb1")
    assert label_of_device(str(tmp_path / "sdb1"), by_label=str(by_label)) == "MY STICK"
    assert label_of_device(str(tmp_path / "sdc1"), by_label=str(by_label)) == ""
    assert label_of_device("/dev/sdb1", by_label=str(tmp_path / "absent")) == ""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount an ext4 loop image")
def test_ext4_loop_image_declared_removable(tmp_path: Path) -> None:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (e2fsprogs) to make the image")
    image = tmp_path / "stick.img"
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "STICK", str(image)], check=True)
    stick = tmp_path / "stick"
    stick.mkdir()
    tracker = RemovableMountTracker(declared=(str(stick),))
    assert [c.kind for c in tracker.poll() if c.mount.mountpoint == str(stick)] == ["mounted"]
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(stick)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop image here: {mounted.stderr.strip()}")
    try:
        changes = [c for c in tracker.poll() if c.mount.mountpoint == str(stick)]
        # The plain directory is replaced by the loop device mounted on it.
        assert [(c.kind, c.mount.device.startswith("/dev/loop"), c.mount.fstype)
                for c in changes] == [("unmounted", False, ""), ("mounted", True, "ext4")]
        assert changes[1].mount.declared
    finally:
        subprocess.run(["umount", str(stick)], check=True)
    changes = [c for c in tracker.poll() if c.mount.mountpoint == str(stick)]
    assert [(c.kind, c.mount.fstype) for c in changes] == [("unmounted", "ext4"), ("mounted", "")]


def _usb_stick_sysfs(sys_root: Path, *, serial: str | None = "4C530001231120115142") -> None:
    """A fake sysfs tree shaped like the kernel's for a USB stick sdb with partition sdb1."""
    usb = sys_root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / "1-2"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("0781\n")
    (usb / "idProduct").write_text("5567\n")
    if serial is not None:
        (usb / "serial").write_text(serial + "\n")
    disk = usb / "1-2:1.0" / "host3" / "target3:0:0" / "3:0:0:0" / "block" / "sdb"
    (disk / "sdb1").mkdir(parents=True)
    (disk / "removable").write_text("1\n")
    (disk / "sdb1" / "partition").write_text("1\n")
    (sys_root / "class" / "block").mkdir(parents=True)
    for name, target in (("sdb", disk), ("sdb1", disk / "sdb1")):
        os.symlink(os.path.relpath(target, sys_root / "class" / "block"), sys_root / "class" / "block" / name)
    sata = sys_root / "devices" / "pci0000:00" / "0000:00:17.0" / "ata1" / "host0" / "block" / "sda"
    (sata / "sda1").mkdir(parents=True)
    (sata / "removable").write_text("0\n")
    os.symlink(os.path.relpath(sata / "sda1", sys_root / "class" / "block"), sys_root / "class" / "block" / "sda1")


def test_usb_identity_is_read_from_a_sysfs_tree(tmp_path: Path) -> None:
    from agent.sources.removable import usb_identity

    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    _usb_stick_sysfs(sys_root)
    dev_root.mkdir()
    where = {"sys_root": str(sys_root), "dev_root": str(dev_root)}
    assert usb_identity("/dev/sdb1", **where) == {"vendor_id": "0781", "product_id": "5567",
                                                  "serial": "4C530001231120115142"}
    assert usb_identity("/dev/sdb", **where)["vendor_id"] == "0781"
    assert usb_identity("/dev/sda1", **where) == {}  # a SATA disk: no USB ids
    assert usb_identity("/dev/nvme0n1", **where) == {}  # not in sysfs at all
    assert usb_identity("tmpfs", **where) == {}
    assert sysfs_is_removable("/dev/sdb1", **where) and not sysfs_is_removable("/dev/sda1", **where)

    machine = FakeMachine()
    machine.plug("/dev/sdb1", "/media/alice/STICK")
    tracker = RemovableMountTracker(
        partitions=machine.partitions, is_removable=lambda d: sysfs_is_removable(d, **where),
        label_of=lambda device: "STICK", identity_of=lambda d: usb_identity(d, **where))
    (change,) = tracker.poll()
    assert change.mount.identity() == {"vendor_id": "0781", "product_id": "5567",
                                       "serial": "4C530001231120115142", "label": "STICK"}


def test_a_stick_without_a_serial_leaves_it_out(tmp_path: Path) -> None:
    from agent.sources.removable import usb_identity

    _usb_stick_sysfs(tmp_path / "sys", serial=None)
    ids = usb_identity("/dev/sdb1", sys_root=str(tmp_path / "sys"), dev_root=str(tmp_path / "dev"))
    assert ids == {"vendor_id": "0781", "product_id": "5567"}
    assert RemovableMount("/media/x", "/dev/sdb1", **ids).identity() == ids


def test_the_label_is_read_from_the_superblock_without_udev(tmp_path: Path) -> None:
    from agent.sources.removable import label_from_superblock

    ext4 = tmp_path / "ext4.img"
    with open(ext4, "wb") as f:
        f.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "财务盘", str(ext4)], check=True, capture_output=True)
    assert label_from_superblock(str(ext4)) == "财务盘"
    assert label_of_device(str(ext4), by_label=str(tmp_path / "no-udev")) == "财务盘"
    fat = bytearray(512)  # a FAT32 boot sector as mkfs.vfat -n WORKSTICK writes it
    fat[71:82], fat[82:90], fat[510:512] = b"WORKSTICK  ", b"FAT32   ", b"\x55\xaa"
    (tmp_path / "fat.img").write_bytes(bytes(fat))
    assert label_from_superblock(str(tmp_path / "fat.img")) == "WORKSTICK"
    fat[71:82] = b"NO NAME    "
    (tmp_path / "fat.img").write_bytes(bytes(fat))
    assert label_from_superblock(str(tmp_path / "fat.img")) == ""
    (tmp_path / "zeros.img").write_bytes(bytes(4096))
    assert label_from_superblock(str(tmp_path / "zeros.img")) == ""
    assert label_from_superblock(str(tmp_path / "absent")) == "" and label_from_superblock("tmpfs") == ""


def test_a_devices_label_and_ids_are_read_once_while_it_stays(tmp_path: Path) -> None:
    machine = FakeMachine()
    asked: list[str] = []
    tracker = RemovableMountTracker(partitions=machine.partitions, is_removable=machine.is_removable,
                                    label_of=lambda d: asked.append(d) or "L",
                                    identity_of=lambda d: asked.append(d) or {"vendor_id": "0781"})
    machine.plug("/dev/sdb1", "/media/a")
    assert [c.mount.vendor_id for c in tracker.poll()] == ["0781"]
    assert tracker.poll() == [] and tracker.poll() == []
    assert asked == ["/dev/sdb1", "/dev/sdb1"]
    machine.unplug("/media/a")
    tracker.poll()
    machine.plug("/dev/sdb1", "/media/a")
    tracker.poll()
    assert len(asked) == 4  # plugged again: read again
