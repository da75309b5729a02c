"""The ``config`` and ``token`` checks: the file loaded, and the secret is kept secret."""

from __future__ import annotations

import os
import stat

from agent.commands.doctor.base import FAIL, PASS, WARN, Ctx, Result, errtext, result


def check_config(ctx: Ctx) -> list[Result]:
    cfg = ctx.cfg
    out = [result("config", PASS, f"{cfg.path} is valid ({len(cfg.readers)} reader(s))")]
    token_file = cfg.iflow.access_token_file if cfg.iflow else None
    for w in cfg.warnings:
        if token_file and w.startswith(token_file):
            continue  # the token check reports it
        out.append(result("config", WARN, w))  # the warning says what to do
    return out


def check_token(ctx: Ctx) -> list[Result]:
    cfg = ctx.cfg
    ic = cfg.iflow
    if ic is None:
        return [result("token", WARN, "no [iflow] table: scans are recorded but never delivered",
                       "add [iflow] with url and access_token_file (see examples/config.toml)")]
    if ic.access_token_file:
        path = ic.access_token_file
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as exc:
            return [result("token", FAIL, f"cannot read the token file {path}: {errtext(exc)}",
                           f"put the device's token from iFlow (settings -> rfid devices) in {path}, "
                           f"then chmod 600 {path}")]
        except UnicodeDecodeError:
            return [result("token", FAIL, f"the token file {path} is not UTF-8 text",
                           f"put the device's token from iFlow in {path}")]
        if not value:
            return [result("token", FAIL, f"the token file {path} is empty",
                           f"put the device's token from iFlow (settings -> rfid devices) in {path}")]
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            return [result("token", FAIL, f"the token file {path} is readable by other users (mode {mode:04o})",
                           f"chmod 600 {path}")]
        return [result("token", PASS, f"token present in {path} (mode {mode:04o})")]
    try:
        mode = stat.S_IMODE(os.stat(cfg.path).st_mode)
    except OSError as exc:
        return [result("token", WARN, f"token present inline, but {cfg.path} cannot be checked: {errtext(exc)}")]
    if mode & stat.S_IRWXO:
        return [result("token", FAIL, f"{cfg.path} holds the token and is readable by all users (mode {mode:04o})",
                       f"chmod 640 {cfg.path}, or move the token to iflow.access_token_file (mode 600)")]
    return [result("token", PASS, f"token present inline in {cfg.path} (mode {mode:04o})")]
