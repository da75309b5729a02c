"""The ``gpio`` check: a gpiozero pin factory works and the feedback pins set up.

Which factory a new process would get is the feedback backend's own answer
(:func:`agent.feedback.gpio.pin_factory_status`). The pins are only claimed
when no daemon runs (it holds them otherwise), and released at once.
"""

from __future__ import annotations

from agent.commands.doctor.base import FAIL, PASS, WARN, Ctx, Result, result
from agent.feedback import make_feedback
from agent.feedback.gpio import pin_factory_status


def check_gpio(ctx: Ctx) -> list[Result]:
    fc = ctx.cfg.feedback
    if fc.backend != "gpio":
        return [result("gpio", PASS, f"not used (feedback.backend = \"{fc.backend}\")")]
    bad = FAIL if fc.fallback == "none" else WARN
    fallback_note = "" if fc.fallback == "none" else " (the daemon falls back to console feedback)"
    status = pin_factory_status()
    if status.name is None:
        detail = f"no gpiozero pin factory works: {status.error}"
        if status.tried:
            detail += f" ({'; '.join(f'Falling back from {t}' for t in status.tried)})"
        # the unit sets GPIOZERO_PIN_FACTORY=lgpio, and gpiozero tries lgpio first without it
        fix = ("on a Pi: sudo apt install python3-lgpio, then sudo systemctl restart rfid-agent; elsewhere set "
               "feedback.backend = \"console\" or \"none\" (the door records scans without LEDs or buzzer)")
        if fc.fallback == "none":
            fix += "; or feedback.fallback = \"console\" (with \"none\" the daemon does not start without GPIO)"
        return [result("gpio", bad, detail + fallback_note, fix)]
    if ctx.daemon is not None:
        return [result("gpio", PASS, f"pin factory {status.name} works; the pins are in use by the running daemon")]
    try:
        # the gpio backend itself, never its console fallback: doctor reports, the daemon falls back
        fb = make_feedback(fc._replace(fallback="none"))
    except Exception as exc:  # noqa: BLE001 - FeedbackUnavailable, ValueError, GPIOZeroError
        return [result("gpio", bad, f"pin factory {status.name} works but the pins cannot be set up: "
                       f"{exc}{fallback_note}",
                       "check feedback.green_pin/red_pin/buzzer_pin (BCM numbers) and that no other program "
                       "uses them")]
    fb.close()  # never raises (Feedback.close logs instead)
    pins = ", ".join(f"{k}={v}" for k, v in (("green", fc.green_pin), ("red", fc.red_pin),
                                             ("buzzer", fc.buzzer_pin)) if v is not None)
    return [result("gpio", PASS, f"pin factory {status.name} works; pins {pins} set up")]
