"""agent doctor's ``metrics`` check, against real directories."""

from __future__ import annotations

import os
import subprocess
import time

from agent.commands.doctor.base import PASS, WARN, Ctx
from agent.commands.doctor.metrics import check_metrics
from agent.config import from_dict
from agent.metrics.exposition import FILE_NAME


def _ctx(tmp_path, textfile_dir, daemon=None, interval="15s"):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    cfg = from_dict({"timezone": "UTC", "state_dir": str(state),
                     "metrics": {"textfile_dir": str(textfile_dir), "interval": interval}})
    return Ctx(cfg, daemon=daemon)


def test_off_is_a_pass(tmp_path):
    [r] = check_metrics(_ctx(tmp_path, ""))
    assert r.status == PASS and "off" in r.detail
    # the default directory absent: node_exporter is not installed
    cfg = from_dict({"timezone": "UTC", "state_dir": str(tmp_path / "state")})
    if not os.path.isdir(cfg.metrics.textfile_dir):
        [r] = check_metrics(Ctx(cfg))
        assert r.status == PASS and "prometheus-node-exporter" in r.detail
    # a directory set on purpose and absent: a typo, not "off"
    [r] = check_metrics(_ctx(tmp_path, tmp_path / "absent"))
    assert r.status == WARN and "does not exist" in r.detail


def test_with_a_daemon_the_file_must_be_fresh(tmp_path):
    d = tmp_path / "tf"
    d.mkdir()
    daemon = {"daemon": True, "pid": 1}
    [r] = check_metrics(_ctx(tmp_path, d, daemon))
    assert r.status == WARN and "has not written" in r.detail and "setfacl" in r.fix
    (d / FILE_NAME).write_text("x 1\n")
    [r] = check_metrics(_ctx(tmp_path, d, daemon))
    assert r.status == PASS and "written" in r.detail
    old = time.time() - 600
    os.utime(d / FILE_NAME, (old, old))
    [r] = check_metrics(_ctx(tmp_path, d, daemon))
    assert r.status == WARN and "600 s ago" in r.detail


def test_without_a_daemon_the_service_user_must_be_able_to_write(tmp_path):
    d = tmp_path / "tf"
    d.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service's user: nobody, here (tests run as root)
    os.chmod(d, 0o755)
    [r] = check_metrics(_ctx(tmp_path, d))
    assert r.status == WARN and "may not write" in r.detail, r
    # an ACL entry for another user, or one the mask takes write from, does not do
    subprocess.run(["setfacl", "-m", "u:65533:rwx", str(d)], check=True)
    [r] = check_metrics(_ctx(tmp_path, d))
    assert r.status == WARN, r
    subprocess.run(["setfacl", "-m", "u:65534:rwx,m::r-x", str(d)], check=True)
    [r] = check_metrics(_ctx(tmp_path, d))
    assert r.status == WARN, r
    subprocess.run(["setfacl", "-m", "u:65534:rwx,m::rwx", str(d)], check=True)  # as the package sets it
    [r] = check_metrics(_ctx(tmp_path, d))
    assert r.status == PASS, r
    subprocess.run(["setfacl", "-b", str(d)], check=True)
    os.chmod(d, 0o777)
    [r] = check_metrics(_ctx(tmp_path, d))
    assert r.status == PASS, r
