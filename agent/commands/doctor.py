"""``agent doctor``: the technician's checklist, one line per check.

Each check gives ``PASS``, ``WARN`` or ``FAIL``, its name, what it found and,
when it did not pass, what to do. In order:

=================  =============================================================
``config``         the file loaded (else the CLI already stopped with exit 2);
                   every config warning as a WARN
``token``          the iFlow token is present; its file (``access_token_file``)
                   is not readable by group/others, or the config file holding
                   it inline is not world-readable
``state_dir``      exists (or can be created) and is writable (a temp file is
                   created and removed)
``state_dir_mode`` 0700 (WARN otherwise: scans identify people)
``disk_space``     FAIL under 50 MB free, WARN under 500 MB
``journal``        opens (the daemon's status when it runs; otherwise the
                   journal lock is taken without waiting and the journal
                   opened); a quarantined (unreadable) segment is a FAIL,
                   an unreadable send-time pins file a WARN
``reader.NAME``    the device is present and permitted (or the running daemon
                   holds it, which is fine)
``gpio``           the gpiozero pin factory constructs (only when
                   ``feedback.backend = "gpio"``)
``clock``          the wall clock is synchronised (WARN otherwise, with the
                   number of scans held for it)
``iflow_dns``      the iFlow host resolves
``iflow_connect``  a TCP connection opens
``iflow_tls``      the TLS handshake passes (https; a WARN for http://)
``iflow_answers``  one GET with the token and ``csv_data=[]`` gets an HTTP
                   answer; 401/403 means the token was refused (FAIL)
``daemon``         the daemon answers on its control socket
``backlog``        the oldest pending scan: WARN over 1 h, FAIL over 24 h
=================  =============================================================

Every network step is bounded (DNS and the GET run under a hard deadline in a
helper thread). The access token is never printed: every detail goes through
:func:`agent.redact.redact`. Exit status: 1 if any check FAILs, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from agent.config import Config, ReaderConfig
from agent.redact import redact, register_secret

__all__ = ["Result", "PASS", "WARN", "FAIL", "add_arguments", "main", "run_checks", "format_line",
           "exit_code", "backlog_result", "MB"]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
MB = 1024 * 1024
DISK_FAIL_BYTES = 50 * MB
DISK_WARN_BYTES = 500 * MB
BACKLOG_WARN_S = 3600.0
BACKLOG_FAIL_S = 86400.0
NET_TIMEOUT_S = 5.0  # DNS, TCP connect, TLS handshake
READ_TIMEOUT_MAX_S = 10.0  # the test GET never waits longer than this for an answer
DAEMON_ASK_TIMEOUT_S = 5.0
START_HINT = "systemctl start rfid-agent"


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # PASS | WARN | FAIL
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def _r(check: str, status: str, detail: str, fix: str = "") -> Result:
    """A result with every text redacted (no secret ever reaches the output)."""
    return Result(check, status, redact(detail), redact(fix) if status != PASS else "")


def format_line(r: Result) -> str:
    """``FAIL  daemon          not running -> systemctl start rfid-agent``."""
    line = f"{r.status:<4}  {r.check:<15} {r.detail}"
    if r.fix and r.status != PASS:
        line += f" -> {r.fix}"
    return line


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


# ---------------------------------------------------------------- context


@dataclass
class _Ctx:
    cfg: Config
    daemon: dict | None = None  # the daemon's status answer, when it runs
    daemon_problem: tuple[str, str] | None = None  # (detail, fix) when it could not be asked
    snapshot: dict | None = None  # journal summary (+ "held"), from the daemon or read locally
    state_ok: bool = False  # the state directory exists and is writable


def _ask_daemon(ctx: _Ctx) -> None:
    from agent.runtime.control import DaemonError, NoDaemon, ask

    cfg = ctx.cfg
    if not os.path.isdir(cfg.state_dir):
        return
    try:
        answer = ask(cfg.state_dir, {"cmd": "status"}, timeout=DAEMON_ASK_TIMEOUT_S)
    except NoDaemon:
        return
    except PermissionError:
        ctx.daemon_problem = (f"permission denied on {cfg.state_dir}/agent.sock",
                              "run agent doctor as root or as the agent's user")
        return
    except DaemonError as exc:
        ctx.daemon_problem = (f"the daemon answered with an error: {exc}",
                              "systemctl restart rfid-agent; journalctl -u rfid-agent")
        return
    except (OSError, ValueError) as exc:  # timeout, reset, garbage
        ctx.daemon_problem = (f"the daemon does not answer on {cfg.state_dir}/agent.sock "
                              f"({type(exc).__name__}: {exc})",
                              "systemctl restart rfid-agent; journalctl -u rfid-agent")
        return
    if isinstance(answer, dict):
        ctx.daemon = answer
        ctx.snapshot = answer
    else:
        ctx.daemon_problem = ("the daemon gave an unexpected status answer",
                              "systemctl restart rfid-agent")


@contextlib.contextmanager
def _as_owner(path: str) -> Iterator[None]:
    """Run as root? Act as the owner of ``path`` (effective ids) meanwhile, so
    that files doctor creates there (the lock file, the journal directory)
    stay usable by the daemon's dedicated user."""
    if os.geteuid() != 0:
        yield
        return
    try:
        st = os.stat(path)
    except OSError:
        yield
        return
    if st.st_uid == 0:
        yield
        return
    egid = os.getegid()
    os.setegid(st.st_gid)
    try:
        os.seteuid(st.st_uid)
        try:
            yield
        finally:
            os.seteuid(0)
    finally:
        os.setegid(egid)


def _bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a helper thread; TimeoutError if it takes longer than ``timeout``.

    For calls with no timeout of their own (getaddrinfo). A call that overruns is
    abandoned in its daemon thread; doctor exits soon after."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="doctor-bounded", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no result within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _errtext(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------- checks


def check_config(ctx: _Ctx) -> list[Result]:
    cfg = ctx.cfg
    out = [_r("config", PASS, f"{cfg.path} is valid ({len(cfg.readers)} reader(s))")]
    token_file = cfg.iflow.access_token_file if cfg.iflow else None
    for w in cfg.warnings:
        if token_file and w.startswith(token_file):
            continue  # the token check reports it
        out.append(_r("config", WARN, w))  # the warning says what to do
    return out


def check_token(ctx: _Ctx) -> list[Result]:
    cfg = ctx.cfg
    ic = cfg.iflow
    if ic is None:
        return [_r("token", WARN, "no [iflow] table: scans are recorded but never delivered",
                   "add [iflow] with url and access_token_file (see examples/config.toml)")]
    if ic.access_token_file:
        path = ic.access_token_file
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as exc:
            return [_r("token", FAIL, f"cannot read the token file {path}: {_errtext(exc)}",
                       f"put the device's token from iFlow (settings -> rfid devices) in {path}, "
                       f"then chmod 600 {path}")]
        except UnicodeDecodeError:
            return [_r("token", FAIL, f"the token file {path} is not UTF-8 text",
                       f"put the device's token from iFlow in {path}")]
        if not value:
            return [_r("token", FAIL, f"the token file {path} is empty",
                       f"put the device's token from iFlow (settings -> rfid devices) in {path}")]
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            return [_r("token", FAIL, f"the token file {path} is readable by other users (mode {mode:04o})",
                       f"chmod 600 {path}")]
        return [_r("token", PASS, f"token present in {path} (mode {mode:04o})")]
    try:
        mode = stat.S_IMODE(os.stat(cfg.path).st_mode)
    except OSError as exc:
        return [_r("token", WARN, f"token present inline, but {cfg.path} cannot be checked: {_errtext(exc)}")]
    if mode & stat.S_IRWXO:
        return [_r("token", FAIL, f"{cfg.path} holds the token and is readable by all users (mode {mode:04o})",
                   f"chmod 640 {cfg.path}, or move the token to iflow.access_token_file (mode 600)")]
    return [_r("token", PASS, f"token present inline in {cfg.path} (mode {mode:04o})")]


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_state_dir(ctx: _Ctx) -> list[Result]:
    sd = ctx.cfg.state_dir
    out: list[Result] = []
    space_at: str | None = sd
    if not os.path.lexists(sd):
        anc = _nearest_existing(sd)
        space_at = anc if os.path.isdir(anc) else None
        if not os.path.isdir(anc):
            out.append(_r("state_dir", FAIL, f"{sd} cannot be created: {anc} is not a directory",
                          "set state_dir to a directory path (default /var/lib/rfid-agent)"))
        elif os.geteuid() != 0 and not os.access(anc, os.W_OK | os.X_OK):
            out.append(_r("state_dir", FAIL, f"{sd} cannot be created: no write permission on {anc}",
                          f"create it: install -d -m 700 -o <agent user> {sd}"))
        else:
            out.append(_r("state_dir", WARN, f"{sd} does not exist yet (the daemon creates it)",
                          START_HINT))
    elif not os.path.isdir(sd):
        space_at = None
        out.append(_r("state_dir", FAIL, f"{sd} exists but is not a directory",
                      "set state_dir to a directory path (default /var/lib/rfid-agent)"))
    else:
        try:
            with _as_owner(sd):
                fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=sd)
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            out.append(_r("state_dir", FAIL, f"{sd} is not writable: {_errtext(exc)}",
                          f"chown <agent user> {sd}; chmod 700 {sd} (and check the file system is "
                          "mounted read-write)"))
        else:
            ctx.state_ok = True
            out.append(_r("state_dir", PASS, f"{sd} exists and is writable"))
        mode = stat.S_IMODE(os.stat(sd).st_mode)
        if mode & 0o077:
            out.append(_r("state_dir_mode", WARN, f"{sd} is accessible to other users (mode {mode:04o}); "
                          "the journal identifies people", f"chmod 700 {sd}"))
        else:
            out.append(_r("state_dir_mode", PASS, f"mode {mode:04o}"))
    if space_at is not None:
        try:
            free = shutil.disk_usage(space_at).free
        except OSError as exc:
            out.append(_r("disk_space", WARN, f"cannot measure free space at {space_at}: {_errtext(exc)}"))
        else:
            text = f"{free / MB:.0f} MB free at {space_at}"
            fix = "free space on that file system (old logs: journalctl --vacuum-size=50M)"
            if free < DISK_FAIL_BYTES:
                out.append(_r("disk_space", FAIL, f"only {text}: scans may fail to be stored", fix))
            elif free < DISK_WARN_BYTES:
                out.append(_r("disk_space", WARN, f"only {text}", fix))
            else:
                out.append(_r("disk_space", PASS, text))
    return out


def _held(cfg: Config, journal) -> dict[str, int]:
    """Pending scans that cannot be sent now, by reason (as `agent status` counts them)."""
    from collections import Counter

    from agent.commands.run import make_clock
    from agent.delivery.deliverer import SENDABLE

    clock = make_clock(cfg)
    held: Counter = Counter()
    for rec in journal.records(("pending",)):
        try:
            eff = clock.effective(rec, policy=cfg.time.unsynced)
        except ValueError:
            held["invalid"] += 1
            continue
        if eff.status not in SENDABLE or eff.when is None:
            held[eff.status] += 1
    return dict(held)


def _corrupt_files(state_dir: str) -> list[str]:
    jdir = os.path.join(state_dir, "journal")
    try:
        names = os.listdir(jdir)
    except OSError:
        return []
    return sorted(os.path.join(jdir, n) for n in names if ".corrupt-" in n)


_EMPTY: dict[str, Any] = {"pending": 0, "delivered": 0, "rejected": 0, "oldest_pending": None,
                          "quarantined": [], "held": {}}


def check_journal(ctx: _Ctx) -> list[Result]:
    cfg = ctx.cfg
    sd = cfg.state_dir
    if ctx.daemon is not None:
        snap = ctx.daemon
        source = "via the running daemon"
    elif not os.path.isdir(sd):
        ctx.snapshot = dict(_EMPTY)
        return [_r("journal", WARN, "no journal yet (the state directory does not exist)", START_HINT)]
    elif ctx.daemon_problem is not None:
        return [_r("journal", WARN, f"not checked: {ctx.daemon_problem[0]}", ctx.daemon_problem[1])]
    else:
        from agent.commands.run import open_journal
        from agent.runtime.control import StateLock

        source = "read directly (no daemon running)"
        jdir = os.path.join(sd, "journal")
        try:
            lock = StateLock(sd)
            with _as_owner(sd):  # the lock file may be created: it must stay the daemon's
                got = lock.acquire(timeout=0)
            if not got:
                return [_r("journal", WARN, "not checked: locked by another agent command",
                           "run agent doctor again in a moment")]
            try:
                if not os.path.isdir(jdir):
                    snap = dict(_EMPTY)
                    source = "empty: no scan recorded yet"
                else:
                    # Opening creates nothing (the directory exists); it may only
                    # delete stray temp files and move unreadable segments aside.
                    journal = open_journal(cfg)
                    try:
                        snap = journal.summary()
                        snap["held"] = _held(cfg, journal)
                    finally:
                        journal.close()
            finally:
                lock.release()
        except OSError as exc:
            return [_r("journal", FAIL, f"the journal in {sd} cannot be opened: {_errtext(exc)}",
                       f"check ownership and permissions of {sd} (chown -R <agent user> {sd})")]
        except Exception as exc:  # noqa: BLE001 - any open failure is a finding
            return [_r("journal", FAIL, f"the journal in {sd} cannot be opened: {type(exc).__name__}: {exc}",
                       "see journalctl -u rfid-agent; keep a copy of the state directory")]
        ctx.snapshot = snap
    quarantined = sorted(set(snap.get("quarantined") or []) | set(_corrupt_files(sd)))
    counts = (f"{snap.get('pending', 0)} pending, {snap.get('delivered', 0)} delivered, "
              f"{snap.get('rejected', 0)} rejected")
    from agent.journal.store import PINS_FILE

    pins = [q for q in quarantined if os.path.basename(q).startswith(PINS_FILE + ".corrupt-")]
    segments = [q for q in quarantined if q not in pins]
    if segments:
        return [_r("journal", FAIL, f"{len(segments)} unreadable segment(s) moved aside, their scans are NOT "
                   f"delivered: {', '.join(segments)} ({counts})",
                   "keep the file(s) for inspection; recover the records by hand, then delete them")]
    if pins:
        return [_r("journal", WARN, f"the send-time pins file was unreadable and moved aside: {', '.join(pins)}; "
                   f"scans resent after an interruption may reach iFlow twice if the clock was corrected ({counts})",
                   "check the disk (agent doctor, dmesg); delete the file once the backlog is delivered")]
    return [_r("journal", PASS, f"{counts} ({source})")]


def _daemon_reader(ctx: _Ctx, name: str) -> dict | None:
    if ctx.daemon is None:
        return None
    for r in ctx.daemon.get("readers") or []:
        if isinstance(r, dict) and r.get("name") == name:
            return r
    return None


def _device_access(path: str, what: str, group_hint: str) -> tuple[str, str] | None:
    """(detail, fix) if ``path`` is missing or not readable/writable, else None."""
    if not os.path.exists(path):
        return (f"{what} {path} is not present",
                "check the reader's cable and USB adapter (ls -l /dev/serial/by-id /dev/input/by-id), "
                "the udev rule and the path in the config")
    if not os.access(path, os.R_OK | os.W_OK):
        try:
            st = os.stat(path)
            import grp

            group = grp.getgrgid(st.st_gid).gr_name
        except (OSError, KeyError):
            group = group_hint
        return (f"{what} {path} is present but not readable and writable by this user",
                f"add the agent's user to group {group} (usermod -aG {group} <agent user>)")
    return None


def _reader_local(rc: ReaderConfig) -> tuple[str, str, str]:
    """(status, detail, fix) for a reader device, checked without opening it."""
    if rc.type == "serial":
        if "://" in rc.port:
            return PASS, f"serial URL {rc.port} (not checked)", ""
        problem = _device_access(rc.port, "serial port", "dialout")
        if problem:
            return FAIL, problem[0], problem[1]
        return PASS, f"serial port {rc.port} present, read/write permitted", ""
    if rc.path:
        problem = _device_access(rc.path, "input device", "input")
        if problem:
            return FAIL, problem[0], problem[1]
        return PASS, f"input device {rc.path} present, read/write permitted", ""
    try:
        import evdev
    except ImportError as exc:
        return FAIL, f"python-evdev is not available: {exc}", "install the agent's dependencies (evdev)"
    want = None
    if rc.usb_id:
        v, p = rc.usb_id.split(":")
        want = (int(v, 16), int(p, 16))
    what = f"name {rc.device_name!r}" if rc.device_name else f"USB id {rc.usb_id}"
    candidates = evdev.list_devices(writable=False)
    unreadable = 0
    for path in candidates:
        try:
            dev = evdev.InputDevice(path)
        except OSError:
            unreadable += 1
            continue
        try:
            match = (rc.device_name and dev.name == rc.device_name) or (
                want is not None and (dev.info.vendor, dev.info.product) == want)
        finally:
            dev.close()
        if match:
            problem = _device_access(path, "input device", "input")
            if problem:
                return FAIL, f"{what}: {problem[0]}", problem[1]
            return PASS, f"input device with {what} found at {path}, read/write permitted", ""
    detail = f"no input device with {what} among {len(candidates)} input device(s)"
    if unreadable:
        detail += f" ({unreadable} not readable by this user)"
        return FAIL, detail, "run agent doctor as root, or add the agent's user to group input"
    return FAIL, detail, "plug the reader in; check device_name/usb_id against: lsusb; evtest"


def check_readers(ctx: _Ctx) -> list[Result]:
    out: list[Result] = []
    for rc in ctx.cfg.readers:
        name = f"reader.{rc.name}"
        try:
            status, detail, fix = _reader_local(rc)
        except Exception as exc:  # noqa: BLE001
            status, detail, fix = FAIL, f"cannot check: {type(exc).__name__}: {exc}", ""
        held = _daemon_reader(ctx, rc.name)
        if held is not None:
            if held.get("connected"):
                out.append(_r(name, PASS, "held by the running daemon (connected)"
                              + (f": {detail}" if status == PASS else "")))
            else:
                err = held.get("error") or "waiting for the device"
                out.append(_r(name, FAIL, f"the running daemon cannot use it: {err}",
                              fix or "check the cable; journalctl -u rfid-agent"))
        else:
            if status == PASS and ctx.daemon is None:
                detail += " (not opened: no daemon holds it; agent probe reads cards)"
            out.append(_r(name, status, detail, fix))
    return out


def check_gpio(ctx: _Ctx) -> list[Result]:
    fc = ctx.cfg.feedback
    if fc.backend != "gpio":
        return [_r("gpio", PASS, f"not used (feedback.backend = \"{fc.backend}\")")]
    import warnings

    bad = FAIL if fc.fallback == "none" else WARN
    fallback_note = "" if fc.fallback == "none" else " (the daemon falls back to console feedback)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from gpiozero.devices import Device

            factory = Device._default_pin_factory()
        except Exception as exc:  # noqa: BLE001 - BadPinFactory and import errors alike
            tried = "; ".join(" ".join(str(w.message).split()) for w in caught)
            detail = f"no gpiozero pin factory works: {type(exc).__name__}: {exc}"
            if tried:
                detail += f" ({tried})"
            return [_r("gpio", bad, detail + fallback_note,
                       "on a Pi: install python3-lgpio and set GPIOZERO_PIN_FACTORY=lgpio; "
                       "elsewhere set feedback.backend = \"console\"")]
    name = type(factory).__name__
    try:
        factory.close()
    except Exception:  # noqa: BLE001
        pass
    if ctx.daemon is not None:
        return [_r("gpio", PASS, f"pin factory {name} works; the pins are in use by the running daemon")]
    from agent.feedback.backends import make_feedback

    try:
        fb = make_feedback("gpio", green=fc.green_pin, red=fc.red_pin, buzzer=fc.buzzer_pin,
                           buzzer_type=fc.buzzer_type, fallback="none")
    except Exception as exc:  # noqa: BLE001 - FeedbackUnavailable, ValueError, GPIOZeroError
        return [_r("gpio", bad, f"pin factory {name} works but the pins cannot be set up: {exc}{fallback_note}",
                   "check feedback.green_pin/red_pin/buzzer_pin (BCM numbers) and that no other program uses them")]
    try:
        fb.close()
    except Exception:  # noqa: BLE001
        pass
    pins = ", ".join(f"{k}={v}" for k, v in (("green", fc.green_pin), ("red", fc.red_pin),
                                             ("buzzer", fc.buzzer_pin)) if v is not None)
    return [_r("gpio", PASS, f"pin factory {name} works; pins {pins} set up")]


def check_clock(ctx: _Ctx) -> list[Result]:
    from agent.clock.timekeeping import ClockSources

    t = ctx.cfg.time
    if t.trust_rtc:
        return [_r("clock", PASS, "trusted without NTP (time.trust_rtc = true)")]
    synced = ClockSources(use_adjtimex=t.use_adjtimex, timesyncd_flag=t.timesyncd_flag,
                          trust_rtc=t.trust_rtc, boot_id_path=t.boot_id_path).synced()
    if synced:
        return [_r("clock", PASS, "synchronised")]
    detail = "NOT synchronised: scans are stamped now and corrected once it syncs"
    if ctx.snapshot is not None:
        held = sum(int(v) for v in (ctx.snapshot.get("held") or {}).values())
        detail += f"; {held} scan(s) held until the time is known"
    return [_r("clock", WARN, detail,
               "check NTP: timedatectl timesync-status; the network must reach an NTP server (UDP 123)")]


def _tls_context(ca_bundle: str | None):
    import ssl

    if ca_bundle and os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


def check_iflow(ctx: _Ctx) -> list[Result]:
    ic = ctx.cfg.iflow
    if ic is None:
        return []
    parts = urlsplit(ic.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        return [_r("iflow_dns", FAIL, f"iflow.url has an invalid port: {ic.url}", "fix iflow.url")]
    net_fix = "check the network, DNS and firewall (outgoing TCP port %d), and iflow.url" % port

    # 1. name resolution (getaddrinfo has no timeout of its own)
    try:
        infos = _bounded(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), NET_TIMEOUT_S)
    except TimeoutError:
        return [_r("iflow_dns", FAIL, f"resolving {host} took over {NET_TIMEOUT_S:g} s",
                   "check /etc/resolv.conf and the DNS server")]
    except (OSError, UnicodeError) as exc:
        return [_r("iflow_dns", FAIL, f"cannot resolve {host}: {_errtext(exc)}",
                   "check the network and DNS (/etc/resolv.conf), and the host name in iflow.url")]
    addrs = list(dict.fromkeys(info[4][0] for info in infos))
    out = [_r("iflow_dns", PASS, f"{host} resolves to {', '.join(addrs[:3])}")]

    # 2. TCP connect (to the first few addresses, each bounded)
    sock = None
    errors = []
    for family, socktype, proto, _, sockaddr in infos[:3]:
        s = socket.socket(family, socktype, proto)
        s.settimeout(NET_TIMEOUT_S)
        try:
            s.connect(sockaddr)
        except OSError as exc:
            s.close()
            errors.append(f"{sockaddr[0]}: {'timed out' if isinstance(exc, TimeoutError) else _errtext(exc)}")
            continue
        sock = s
        break
    if sock is None:
        out.append(_r("iflow_connect", FAIL, f"cannot connect to {host} port {port}: {'; '.join(errors)}",
                      net_fix))
        return out
    out.append(_r("iflow_connect", PASS, f"TCP connection to {sock.getpeername()[0]} port {port}"))

    # 3. TLS handshake, with the agent's trust settings and SNI
    try:
        if https:
            import ssl

            try:
                ctx_tls = _tls_context(ic.ca_bundle)
                with ctx_tls.wrap_socket(sock, server_hostname=host) as tls:
                    version = tls.version()
                out.append(_r("iflow_tls", PASS, f"{version} handshake passed, certificate valid for {host}"
                              + (f" (CA bundle {ic.ca_bundle})" if ic.ca_bundle else "")))
            except ssl.SSLCertVerificationError as exc:
                out.append(_r("iflow_tls", FAIL, f"the certificate of {host} is not trusted: "
                              f"{exc.verify_message or exc.reason}",
                              "check the clock (a wrong date breaks certificates), iflow.ca_bundle, "
                              "and whether a proxy intercepts TLS"))
                return out
            except (ssl.SSLError, OSError) as exc:
                out.append(_r("iflow_tls", FAIL, f"TLS handshake with {host} failed: "
                              f"{'timed out' if isinstance(exc, TimeoutError) else _errtext(exc)}",
                              "check that iflow.url is the https address of iFlow and no proxy is in the way"))
                return out
        else:
            out.append(_r("iflow_tls", WARN, "not used: iflow.url is http://, the token travels unencrypted",
                          "use an https:// URL unless iFlow is on a trusted local network"))
    finally:
        sock.close()

    # 4. one real request with the token and no scans
    out.append(_answers(ic))
    return out


def _answers(ic) -> Result:
    import httpx

    register_secret(str(httpx.QueryParams({"t": ic.access_token}))[2:])
    host = urlsplit(ic.url).hostname
    connect_t = min(ic.connect_timeout, NET_TIMEOUT_S)
    read_t = min(ic.read_timeout, READ_TIMEOUT_MAX_S)
    verify: Any = _tls_context(ic.ca_bundle) if ic.url.startswith("https") else True

    def get() -> tuple[int, float]:
        with httpx.Client(timeout=httpx.Timeout(read_t, connect=connect_t), verify=verify,
                          follow_redirects=False,
                          headers={"User-Agent": f"rfid-agent-doctor/{ic.client_version}",
                                   "Accept": "application/json"}) as client:
            if ic.csv_data_in == "json-body":
                req = client.build_request("GET", ic.url, params={"access_token": ic.access_token,
                                                                  "version": ic.client_version},
                                           content=b"[]", headers={"Content-Type": "application/json"})
            else:
                req = client.build_request("GET", ic.url, params={"access_token": ic.access_token,
                                                                  "csv_data": "[]",
                                                                  "version": ic.client_version})
            t0 = time.monotonic()
            resp = client.send(req, stream=True)
            try:
                return resp.status_code, time.monotonic() - t0
            finally:
                resp.close()

    try:
        status, took = _bounded(get, connect_t + read_t + 2.0)
    except TimeoutError:
        return _r("iflow_answers", FAIL, f"{host} did not answer within {connect_t + read_t:g} s",
                  "iFlow may be overloaded or a firewall drops the traffic; try again later")
    except httpx.TimeoutException:
        return _r("iflow_answers", FAIL, f"{host} did not answer within {read_t:g} s",
                  "iFlow may be overloaded or a firewall drops the traffic; try again later")
    except Exception as exc:  # noqa: BLE001 - never chained: httpx errors carry the URL
        return _r("iflow_answers", FAIL, f"request to {host} failed: {type(exc).__name__}: {exc}",
                  "check the network and iflow.url")
    took_ms = f"{took * 1000:.0f} ms"
    if status in (401, 403):
        return _r("iflow_answers", FAIL, f"{host} refused the access token (HTTP {status})",
                  "check the token registered in iFlow under settings -> rfid devices, and iflow.access_token_file")
    if 200 <= status < 300 or status in (400, 422):
        return _r("iflow_answers", PASS, f"{host} answered HTTP {status} to an empty batch in {took_ms}")
    return _r("iflow_answers", WARN, f"{host} answers, but with HTTP {status} to an empty batch",
              "check the path in iflow.url (it ends in /store_attendances); a 5xx is iFlow's side")


def check_daemon(ctx: _Ctx) -> list[Result]:
    d = ctx.daemon
    if d is not None:
        up = float(d.get("uptime_seconds") or 0)
        return [_r("daemon", PASS, f"running (pid {d.get('pid')}, version {d.get('version')}, up {up / 60:.0f} min)")]
    if ctx.daemon_problem is not None:
        return [_r("daemon", FAIL, ctx.daemon_problem[0], ctx.daemon_problem[1])]
    return [_r("daemon", FAIL, "daemon not running", START_HINT)]


def backlog_result(snapshot: dict | None, now: float | None = None) -> Result:
    """The backlog check from a status/summary dict (pure)."""
    if snapshot is None:
        return _r("backlog", WARN, "unknown: the journal could not be read", "see the journal check")
    pending = int(snapshot.get("pending") or 0)
    oldest = snapshot.get("oldest_pending")
    if not pending or not oldest:
        return _r("backlog", PASS, "nothing waiting to be delivered" if not pending else f"{pending} pending")
    try:
        age = (time.time() if now is None else now) - datetime.fromisoformat(str(oldest)).timestamp()
    except ValueError:
        return _r("backlog", WARN, f"{pending} pending; oldest has an unreadable time {oldest!r}")
    hours = age / 3600
    text = f"{pending} scan(s) pending, the oldest captured {hours:.1f} h ago"
    fix = "agent status / agent flush show why; check the iflow and clock lines above"
    if age > BACKLOG_FAIL_S:
        return _r("backlog", FAIL, text, fix)
    if age > BACKLOG_WARN_S:
        return _r("backlog", WARN, text, fix)
    return _r("backlog", PASS, text)


def check_backlog(ctx: _Ctx) -> list[Result]:
    return [backlog_result(ctx.snapshot)]


CHECKS: tuple[tuple[str, Callable[[_Ctx], list[Result]]], ...] = (
    ("config", check_config),
    ("token", check_token),
    ("state_dir", check_state_dir),
    ("journal", check_journal),
    ("reader", check_readers),
    ("gpio", check_gpio),
    ("clock", check_clock),
    ("iflow", check_iflow),
    ("daemon", check_daemon),
    ("backlog", check_backlog),
)


def run_checks(cfg: Config, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every check in order; a check that crashes is itself a FAIL."""
    if cfg.iflow is not None:
        register_secret(cfg.iflow.access_token)
    ctx = _Ctx(cfg)
    _ask_daemon(ctx)
    results: list[Result] = []
    for name, fn in CHECKS:
        try:
            found = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - doctor must finish its list
            found = [_r(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                        "report this as a bug in agent doctor")]
        for r in found:
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='a JSON list of {"check","status","detail","fix"} objects')


def main(cfg: Config, args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))

    def show(r: Result) -> None:
        print(format_line(r), flush=True)

    results = run_checks(cfg, None if as_json else show)
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        n = {s: sum(r.status == s for r in results) for s in (FAIL, WARN, PASS)}
        print(f"doctor: {n[FAIL]} FAIL, {n[WARN]} WARN, {n[PASS]} PASS", flush=True)
    sys.stdout.flush()
    return exit_code(results)
