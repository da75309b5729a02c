"""A journal that only looks durable: state_dir on tmpfs, zram or an overlay in RAM.

The mountinfo parsing and the verdict are pure and tested with real lines
(Raspberry Pi OS's overlayroot, zram-config, log2ram, a Docker container);
then a real tmpfs: `agent run` refuses it with one line (exit 2), starts with
journal.allow_volatile, and `agent doctor` FAILs (or WARNs) the same condition.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from agent.commands import doctor
from agent.config import load
from agent.fsinfo import (
    PERSISTENT,
    UNKNOWN,
    VOLATILE,
    classify,
    mount_of,
    parse_mountinfo,
    storage_of,
)
from tests.support.harness import Daemon, Pty, run_cli, wait_ready, write_config
from tests.support.mounts import NEEDS_TMPFS, tmpfs

# Raspberry Pi OS with the overlay file system on (raspi-config; the overlayroot initramfs):
# the SD card's root read-only below, a tmpfs above.
OVERLAYROOT = """\
20 1 0:19 / / rw,noatime - overlay overlayroot rw,lowerdir=/media/root-ro,upperdir=/media/root-rw/overlay,\
workdir=/media/root-rw/overlay-workdir/_
21 20 179:2 / /media/root-ro ro,noatime master:1 - ext4 /dev/mmcblk0p2 ro
22 20 0:18 / /media/root-rw rw,relatime master:2 - tmpfs tmpfs-root rw,mode=755
23 20 0:5 / /dev rw,relatime shared:2 - devtmpfs udev rw,size=187464k,nr_inodes=46866,mode=755
24 20 179:1 / /boot/firmware rw,relatime shared:7 - vfat /dev/mmcblk0p1 rw,fmask=0022,dmask=0022
"""
# The same with overlayroot=device:dev=/dev/sda1: the upper layer on a USB disk.
OVERLAY_ON_DISK = OVERLAYROOT.replace("- tmpfs tmpfs-root rw,mode=755", "- ext4 /dev/sda1 rw")
# zram-config: /var/log an overlay whose upper layer is an ext4 on /dev/zram1.
ZRAM_CONFIG = """\
25 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
90 25 179:2 /var/log /opt/zram/log.bind rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
95 25 254:1 / /opt/zram/zram1 rw,relatime shared:40 - ext4 /dev/zram1 rw,discard
96 25 0:41 / /var/log rw,relatime shared:41 - overlay overlay1 rw,lowerdir=/opt/zram/log.bind,\
upperdir=/opt/zram/zram1/upper,workdir=/opt/zram/zram1/workdir
"""
# log2ram, and a zram device mounted straight at /var/lib.
LOG2RAM = "25 1 179:2 / / rw shared:1 - ext4 /dev/mmcblk0p2 rw\n30 25 0:40 / /var/log rw,nosuid - tmpfs log2ram rw\n"
ZRAM_DIRECT = "25 1 179:2 / / rw shared:1 - ext4 /dev/root rw\n31 25 254:0 / /var/lib rw - ext4 /dev/zram0 rw\n"
# Inside a Docker container: the upper layer is on the host, not visible here.
DOCKER = """\
1265 1100 0:322 / / rw,relatime master:560 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:\
/var/lib/docker/overlay2/l/B,upperdir=/var/lib/docker/overlay2/0f3e/diff,workdir=/var/lib/docker/overlay2/0f3e/work
1266 1265 0:325 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1272 1265 254:1 /var/lib/docker/containers/c/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
"""


def verdict(text: str, path: str, **kw) -> tuple[str, str]:
    s = classify(path, parse_mountinfo(text), **kw)
    return s.kind, s.what


# ------------------------------------------------------------------ pure: parsing


def test_parse_mountinfo_fields_optional_tags_and_escapes():
    text = OVERLAYROOT + "40 20 8:17 /sub /mnt/my\\040disk\\134x rw - ext4 /dev/sdb1 rw\nnot a mount line\n\n"
    mounts = parse_mountinfo(text)
    assert [m.mount_point for m in mounts] == ["/", "/media/root-ro", "/media/root-rw", "/dev", "/boot/firmware",
                                                "/mnt/my disk\\x"]
    root, ro, rw = mounts[:3]
    assert (root.fstype, root.source) == ("overlay", "overlayroot")
    assert "upperdir=/media/root-rw/overlay" in root.super_options
    assert (ro.mount_id, ro.parent_id, ro.device, ro.options) == (21, 20, "179:2", "ro,noatime")
    assert (ro.fstype, ro.source, ro.super_options) == ("ext4", "/dev/mmcblk0p2", "ro")  # after "master:1 -"
    assert (rw.fstype, rw.source) == ("tmpfs", "tmpfs-root")
    assert mounts[-1].root == "/sub"


def test_mount_of_longest_prefix_and_the_top_of_a_stack():
    mounts = parse_mountinfo(OVERLAYROOT + "50 22 0:60 / /media/root-rw rw - ext4 /dev/sda2 rw\n")
    assert mount_of("/media/root-rw/overlay/var", mounts).source == "/dev/sda2"  # mounted over the tmpfs
    assert mount_of("/media/root-rwx", mounts).mount_point == "/"  # not a path under /media/root-rw
    assert mount_of("/media/root-ro", mounts).mount_point == "/media/root-ro"
    assert mount_of("/x", []) is None


# ------------------------------------------------------------------ pure: verdicts


@pytest.mark.parametrize("text,path,kind,words", [
    (OVERLAYROOT, "/var/lib/rfid-agent", VOLATILE, ["overlay at /", "tmpfs at /media/root-rw", "RAM"]),
    (OVERLAYROOT, "/boot/firmware/state", PERSISTENT, ["vfat", "/dev/mmcblk0p1"]),
    (OVERLAY_ON_DISK, "/var/lib/rfid-agent", PERSISTENT, ["ext4 at /media/root-rw", "/dev/sda1"]),
    (ZRAM_CONFIG, "/var/log/agent", VOLATILE, ["overlay at /var/log", "/dev/zram1"]),
    (ZRAM_CONFIG, "/var/lib/rfid-agent", PERSISTENT, ["ext4 at /"]),
    (LOG2RAM, "/var/log/rfid", VOLATILE, ["tmpfs at /var/log"]),
    (ZRAM_DIRECT, "/var/lib/rfid-agent", VOLATILE, ["/dev/zram0"]),
    (DOCKER, "/var/lib/rfid-agent", UNKNOWN, ["/var/lib/docker/overlay2/0f3e/diff", "not visible"]),
    ("", "/var/lib", UNKNOWN, ["no mount"]),
])
def test_classify_real_layouts(text, path, kind, words):
    got, what = verdict(text, path)
    assert got == kind, what
    for w in words:
        assert w in what, what


def test_a_zram_device_under_another_name_is_found_through_its_number():
    text = "25 1 254:0 / / rw - ext4 /dev/root rw\n"
    assert verdict(text, "/var/lib")[0] == PERSISTENT
    names = {"254:0": "zram0"}
    assert verdict(text, "/var/lib", block_name=names.get)[0] == VOLATILE


def test_overlays_pointing_at_each_other_end_as_unknown():
    text = ("1 0 0:1 / /a rw - overlay o rw,upperdir=/b/u\n"
            "2 0 0:2 / /b rw - overlay o rw,upperdir=/a/u\n")
    assert verdict(text, "/a/state")[0] == UNKNOWN


def _shm_is_tmpfs() -> bool:
    with open("/proc/self/mountinfo") as f:
        shm = mount_of("/dev/shm", parse_mountinfo(f.read()))
    return shm is not None and shm.fstype == "tmpfs"


@pytest.mark.skipif(not _shm_is_tmpfs(), reason="/dev/shm is not a tmpfs here")
def test_this_machine_dev_shm_when_it_is_a_tmpfs():
    assert storage_of("/dev/shm/not-yet/created").kind == VOLATILE  # judged where it would be created


# ------------------------------------------------------------------ a real tmpfs


@pytest.fixture
def ram(tmp_path):
    with tmpfs(tmp_path / "ram") as d:
        yield d


@NEEDS_TMPFS
def test_daemon_refuses_a_state_dir_on_tmpfs_and_starts_when_allowed(ram, tmp_path):
    state = ram / "state"
    pty = Pty()
    try:
        cfg = write_config(tmp_path / "c.toml", state_dir=state, port=pty.port,
                           extra={"journal": {"allow_volatile": False}})
        r = run_cli(cfg, "run", timeout=30)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert str(state) in lines[0] and "tmpfs" in lines[0] and "power cut" in lines[0]
        assert "persistent partition" in lines[0] and "journal.allow_volatile = true" in lines[0]
        assert not state.exists()  # refused before anything was created

        cfg = write_config(tmp_path / "c2.toml", state_dir=state, port=pty.port,
                           extra={"journal": {"allow_volatile": True}})
        d = Daemon(cfg)
        try:
            wait_ready(cfg)
            pty.send(b"0004512345\r\n")
            assert d.wait_for(lambda ls: any(ln.startswith("stored tag=0004512345") for ln in ls))
            assert d.terminate() == 0
        finally:
            if d.proc.poll() is None:
                d.kill()
        assert any("do NOT survive a power cut" in ln for ln in d.stderr), d.stderr
    finally:
        pty.close()


@NEEDS_TMPFS
def test_doctor_fails_a_state_dir_on_tmpfs_and_warns_when_allowed(ram, tmp_path, capsys):
    state = ram / "state"
    for allow, status in ((False, "FAIL"), (True, "WARN")):
        cfg = write_config(tmp_path / f"c-{allow}.toml", state_dir=state,
                           extra={"journal": {"allow_volatile": allow}})
        rc = doctor.main(load(str(cfg)), argparse.Namespace(json=False))
        out = capsys.readouterr().out
        [line] = [ln for ln in out.splitlines() if ln.split()[1:2] == ["state_durable"]]
        assert line.startswith(status) and "tmpfs" in line and "power cut" in line, line
        assert "persistent partition" in line
        if status == "FAIL":
            assert rc == 1 and "refuses" in line


@pytest.mark.skipif(storage_of(tempfile.gettempdir()).kind != PERSISTENT,
                    reason=f"{tempfile.gettempdir()} (where tmp_path lives) is not on a persistent file system here")
def test_doctor_passes_a_state_dir_on_a_disk(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "state", extra={"journal": {"allow_volatile": False}})
    doctor.main(load(str(cfg)), argparse.Namespace(json=False))
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if ln.split()[1:2] == ["state_durable"]]
    assert line.startswith("PASS"), line


def test_allow_volatile_is_a_boolean_journal_key(tmp_path):
    cfg = write_config(tmp_path / "c.toml", state_dir=tmp_path / "s")
    assert load(str(cfg)).journal.allow_volatile is True  # the test harness's default
    bad = write_config(tmp_path / "b.toml", state_dir=tmp_path / "s", extra={"journal": {"allow_volatile": "yes"}})
    r = run_cli(bad, "status")
    assert r.returncode == 2 and "journal.allow_volatile" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from agent.config import from_dict

    assert from_dict({"timezone": "UTC"}).journal.allow_volatile is False


def test_storage_of_unreadable_mountinfo_is_unknown(tmp_path):
    s = storage_of(str(tmp_path), mountinfo=str(tmp_path / "missing"))
    assert s.kind == UNKNOWN and "cannot read" in s.what
    assert Path(str(tmp_path)).exists()
