#!/usr/bin/env bash
# Makes (once) and prints the directory of the Ansible tools the role's tests use:
#   DIR/bin/ansible-playbook, DIR/bin/ansible-lint   (a venv, versions pinned in
#                                                     deploy/ansible/requirements.txt)
#   DIR/collections                                  (community.general only: its
#                                                     chroot connection drives the test)
# Cached under ${AGENT_ANSIBLE_CACHE:-~/.cache/rfid-agent}, keyed by the pins, so a
# second run is instant. Needs PyPI (never Ansible Galaxy, which CI cannot reach).
#
# community.general comes out of the pinned `ansible` community wheel, checked
# against its sha256: installing the whole wheel (~100 collections, 50k files)
# would cost a minute for the one plugin the test needs.
#
# Usage: scripts/_ansible.sh          progress on stderr, DIR on stdout
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$here/deploy/ansible/requirements.txt"
community_version="12.3.0"   # ansible (the community bundle) for ansible-core 2.19
community_sha256="cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414"
python="${PYTHON:-python3}"

cache="${AGENT_ANSIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rfid-agent}"
key="$({ cat "$pins"; echo "$community_version $community_sha256"; "$python" -V; } | sha256sum | cut -c1-12)"
dir="$cache/ansible-$key"

if [ -e "$dir/.complete" ]; then
    echo "$dir"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$dir.lock"
flock 9
if [ -e "$dir/.complete" ]; then   # made by another process while we waited
    echo "$dir"
    exit 0
fi

start=$SECONDS
echo "ansible: making $dir (ansible-core, ansible-lint, community.general; ~30 s)" >&2
rm -rf "$dir"   # a half-made one from a killed run
"$python" -m venv "$dir"
# Every dependency is pinned in the file, so pip resolves nothing.
"$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$pins" >&2
"$dir/bin/pip" check >&2

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$dir/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$wheels" "ansible==$community_version" >&2
wheel="$wheels/ansible-$community_version-py3-none-any.whl"
echo "$community_sha256  $wheel" | sha256sum --check --quiet >&2
"$dir/bin/python" - "$wheel" "$dir/collections" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith("ansible_collections/community/general/")])
EOF

touch "$dir/.complete"
echo "ansible: ready in $((SECONDS - start)) s" >&2
echo "$dir"
