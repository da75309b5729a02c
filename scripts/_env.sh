# Sourced by scripts/test, scripts/demo, scripts/bench: a virtual environment in
# .venv with the package installed (editable) and the requested extras, on a
# fresh Debian/Ubuntu machine with Python 3.11+. Installs the few Debian
# packages it needs when run as root (or with sudo available).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AGENT_VENV:-$ROOT/.venv}"
# With the test extra: the real libgpiod v2 binding, so the GPIO shell's import
# path (and doctor's v1/v2 check) runs against it; pinned, and a wheel only
# (a source build needs a compiler and python3-dev). No GPIO chip is needed.
TEST_GPIOD="gpiod==2.5.0"

_apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
        echo "missing Debian packages: $* (run as root or install them)" >&2
        return 1
    fi
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

_pick_python() {
    for py in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$py" ] || continue
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    echo "agent needs Python 3.11 or newer (apt-get install python3)" >&2
    return 1
}

ensure_venv() {  # ensure_venv "extras" (e.g. "test")
    local extras="${1:-}"
    local py
    py="$(_pick_python)"
    # evdev builds from source: it needs a C compiler and the kernel headers.
    if ! command -v gcc >/dev/null || [ ! -e /usr/include/linux/input.h ]; then
        _apt_install gcc linux-libc-dev || true
    fi
    if ! "$py" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        _apt_install python3-dev || true
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$py" -m venv "$VENV" 2>/dev/null || { _apt_install python3-venv && "$py" -m venv "$VENV"; }
    fi
    # Re-run when the project, its pinned dependencies or the extras change.
    local stamp="$VENV/.installed-$({ cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock"; echo "$TEST_GPIOD"; } | cksum | cut -d' ' -f1)-${extras}"
    if [ ! -e "$stamp" ]; then
        echo "setting up $VENV (log: $VENV/install.log)" >&2
        local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
        "${pip[@]}" --upgrade pip >"$VENV/install.log" 2>&1 || true
        # The runtime part exactly as a Pi gets it (the lock), then the agent itself;
        # the lock holds the whole closure, hence --no-deps (see its header).
        # Each step names itself in the log first: scripts/demo shows its last line.
        local log="$VENV/install.log"
        if ! { echo "installing the pinned dependencies (requirements.lock)" && "${pip[@]}" --require-hashes --no-deps -r "$ROOT/requirements.lock"; } >>"$log" 2>&1 \
                || ! { echo "installing the agent (editable)" && "${pip[@]}" --no-deps -e "$ROOT"; } >>"$log" 2>&1 \
                || ! { echo "installing the extras: ${extras:-none}" && _install_extras "$extras"; } >>"$log" 2>&1; then
            tail -n 30 "$VENV/install.log" >&2
            echo "installing the agent into $VENV failed (full log: $VENV/install.log)" >&2
            return 1
        fi
        if [[ ",$extras," == *",test,"* ]] && ! { echo "installing $TEST_GPIOD (a wheel)" \
                && "${pip[@]}" --only-binary gpiod "$TEST_GPIOD"; } >>"$log" 2>&1; then
            # not fatal: the tests that need the binding skip, saying so
            echo "no $TEST_GPIOD wheel for this platform (see $VENV/install.log)" >&2
        fi
        touch "$stamp"
    fi
}

_install_extras() {  # _install_extras "test,..." : pyproject's optional dependencies, unpinned
    [ -n "${1:-}" ] || return 0
    local reqs
    reqs="$("$VENV/bin/python" - "$ROOT/pyproject.toml" "$1" <<'EOF'
import sys, tomllib
extras = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]
print("\n".join(req for name in sys.argv[2].split(",") for req in extras[name.strip()]))
EOF
)" || return 1
    # Only-if-needed upgrades: a locked package an extra also wants stays as locked.
    local IFS=$'\n'
    # shellcheck disable=SC2086  # split on newlines: one requirement per line
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $reqs
}
