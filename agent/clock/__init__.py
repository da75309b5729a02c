"""Time you can trust on a Raspberry Pi without a real-time clock.

A Pi boots with the wall clock it last saved (fake-hwclock / timesyncd's
clock file: hours or days behind) and only learns the true time when NTP
synchronises, which may be never on an isolated network. This package stamps
every scan so that its true time can be recovered later, and decides at
delivery time which UTC instant (if any) may be sent.

Sources (:class:`~agent.clock.sources.ClockSources`, all injectable)
-------------------------------------------------------------------
* wall clock: ``time.time_ns()`` (CLOCK_REALTIME, may be wrong or stepped);
* mono clock: ``CLOCK_BOOTTIME`` in ns; starts near 0 at kernel boot, never
  stepped, and is slewed by NTP exactly like the wall clock. Hence within one
  boot ``offset = wall - mono`` is constant except when the wall clock is
  *stepped* (settimeofday, an NTP step, a leap second): that is what makes
  ``true_time = mono + offset`` exact;
* boot id: ``/proc/sys/kernel/random/boot_id`` (mono values only compare
  within one boot);
* sync state: read-only ``adjtimex`` (``TIME_ERROR``/``STA_UNSYNC`` means
  unsynchronised; works with timesyncd and chrony; the kernel sets
  STA_UNSYNC on every settimeofday, so a manual ``date -s`` reads as
  unsynced). The kernel answer is authoritative when available; only when it
  is not (non-Linux, ``adjtimex`` blocked, ``use_adjtimex=False``) the
  timesyncd flag file counts, and only if its mtime falls within this boot.
  ``trust_rtc=True`` declares the clock always trustworthy (a board with a
  real RTC and no NTP).

Stamping (:meth:`~agent.clock.clock.Clock.stamp`, no I/O)
---------------------------------------------------------
A scan gets ``captured_at`` (wall clock, UTC ISO 8601 with microseconds),
``boot_id``, ``mono_ns`` and ``synced``. ``synced`` is the sync state cached by
the last :meth:`Clock.observe`, *and* ``wall - mono`` must still agree with
the last observation within ``jump_threshold_s``: a scan taken in the second
after a step, before ``observe()`` noticed it, is stamped unsynced.

Anchors (:class:`~agent.clock.anchors.AnchorStore`, one JSON file, atomic writes)
---------------------------------------------------------------------------------
:meth:`Clock.observe` (every supervisor tick, 2 s; the daemon, and `agent status` without one) records an anchor
``(mono_ns, offset_ns)`` for the current boot when the clock becomes
synchronised, after a step detected while synchronised, and every
``anchor_every_s`` (10 min) while synchronised, so the last synchronised wall
time of every boot is known. It reads the sync state *before* the clocks, so
an anchor is never taken from a wall time read before the step that
synchronised it. A step is ``|Δ(wall - mono)| > jump_threshold_s`` between two
observations; it is logged as a warning with its size and returned as the
event ``"jump:-3600.0s"``. Boots are kept in the order they were first seen
(the last 50), anchors per boot bounded (the first and the newest).
The process that owns the journal writes the store: the daemon, or without
one ``agent flush`` (its HTTPS anchors) and ``agent status`` (``observe()``);
the journal's lock keeps it to one at a time. Others only read it
(:meth:`AnchorStore.reload`).

A second source: iFlow's HTTPS Date (:mod:`agent.clock.httpdate`)
-----------------------------------------------------------------
Where NTP is blocked the kernel never synchronises, yet every answer of
iFlow over verified TLS carries a ``Date``. With the boot clock read when
the request left and when the answer came, it bounds this boot's offset to
about ±(0.5 s + half the round trip): :meth:`Clock.observe_answer`. While the
kernel's clock is not trusted and the boot has no NTP anchor, a bound within
``time.http_date_max_error`` (5 s) is an anchor like an NTP one (the boot's
file entry says ``"https"``, ``"ntp": false``), so the boot's scans are
corrected exactly as after a sync; a tighter one later replaces it. NTP
(or a trusted RTC) always wins: an NTP anchor is newer and counts, a Date
that disagrees with it by more than its own bound plus a second is logged
and kept (``"disagree"``) for ``agent doctor``. Plain HTTP answers are never
believed unless ``time.http_date_insecure``. Before a delivery pass needs
the time, :mod:`agent.delivery.timeprobe` asks for it with a token-less HEAD.

Effective time (:meth:`Clock.effective`, :mod:`agent.clock.policy`), in order
-----------------------------------------------------------------------------
1. The record's boot has an anchor: the time is ``mono_ns + offset`` where
   the offset is that boot's **newest** anchor. Between steps all anchors of
   a boot carry the same offset (to the µs of two back-to-back clock reads),
   so the newest equals the nearest in mono time; they differ only after the
   clock was stepped while synchronised, and then the newest measurement
   wins (a synchronised clock is stepped only to correct it) and applies to
   the whole boot, so times within a boot are ordered by mono time, the
   source of truth for ordering: a record is never given a time earlier
   than one captured before it in the same boot. If the record was stamped
   synced and its stamp agrees with this within ``CONFIRM_TOLERANCE_NS``
   (50 ms: far above the µs between two clock reads) it is sent exactly as
   stamped, status ``"ok"``; otherwise the derived time is sent, status
   ``"corrected"`` (original kept). So ordering within a boot is exact for
   corrected records and good to 50 ms between "ok" ones (a step that small
   is below any detection threshold anyway).
   Limitation: records already delivered before a step cannot be recalled.
2. No anchor, stamped synced (e.g. the anchor file was lost): ``"ok"``.
3. No anchor, stamped unsynced:

   * ``record["released"] is True`` (a person ran
     ``agent flush --release-unsynced``), or policy ``"send"`` and the record
     is from a past boot, or from the current boot and older than
     ``unsynced_grace_s`` (15 min, giving NTP its chance): sent with its
     original stamp, status ``"unsynced_sent"`` (flagged, never silent);
   * else current boot: ``"wait"`` (it will be corrected once this boot
     syncs);
   * else past boot: ``"held_unsynced"``. A past boot can never sync any
     more; if a later boot has synced, ``bound`` gives the interval the true
     time lies in: at most the later boot's start (its first synced wall time
     minus its uptime then, i.e. its offset), at least the last synchronised
     wall time seen in an earlier boot plus the record's own ``mono_ns``
     (the record's boot started after that moment), or the sanity floor if
     no earlier boot synced. ``bound`` is also given for ``unsynced_sent``.

4. Sanity, on whatever would be sent: more than ``future_tolerance_s`` after
   now gives ``"held_insane"`` for every record; earlier than ``build_time``
   (default 2020-01-01 UTC: catches a clock at 1970) gives it only to a stamp
   taken while the clock was not trusted (stamped unsynced and no anchor of
   its boot corrects it, i.e. rule 3's ``unsynced_sent``) from this device's
   readers. A synchronised or anchored time before the build date is real
   (an upgrade after an outage that spans the build) and is sent; so is a
   punch from another system (``source`` other than ``"reader"``).
   "Now" is this boot's ``mono + offset`` if it has an anchor, else the
   newest of the wall clock and the last synchronised wall time in the store.
   A released record (``agent flush --release-unsynced``, after a person
   checked it) is sent anyway, with its stamp as captured: status
   ``"insane_sent"`` (flagged, never silent).

A ``"wait"`` decision carries ``overdue`` once the record is older than
``unsynced_grace_s`` (NTP had its chance: it is probably blocked), which is
what :mod:`agent.clock.reasons` tells the technician. Every held status is
put in words there, with what to do.

Local time for iFlow (:func:`~agent.clock.policy.to_local`)
------------------------------------------------------------
iFlow takes the site's local date and time without an offset. The UTC
instant is converted with the configured ``ZoneInfo`` (never the machine's
TZ); UTC -> local is unambiguous. Seconds are **truncated** (12:00:00.999 ->
12:00:00), never rounded, so a scan never moves into the next second/day.
In the hour repeated at the end of summer time (Europe/Bucharest, last
Sunday of October: 04:00 EEST -> 03:00 EET) the local clock shows
03:00-03:59 twice and both are sent as such; in March 03:00-03:59 does not
exist (03:00 EET -> 04:00 EEST). Records are ordered by their UTC instant.

Modules
-------
* :mod:`agent.clock.policy`: the pure decision rules above (standard library only);
* :mod:`agent.clock.httpdate`: what an answer's Date says about the true time (pure);
* :mod:`agent.clock.reasons`: each held status in words, with what to do (pure);
* :mod:`agent.clock.sources`: the machine's clocks, boot id and ``adjtimex``;
* :mod:`agent.clock.anchors`: the anchor file;
* :mod:`agent.clock.clock`: :class:`~agent.clock.clock.Clock`, tying them together.

Import from the modules themselves: this package imports nothing, so the pure
policy can be used without loading the machine-facing parts.
"""
