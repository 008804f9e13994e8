#!/usr/bin/env bash
# Build the node image for podman where no image registry is reachable, for the slow deploy
# tests (tests/deploy/test_deploy_podman.py, which runs this before it starts pods):
#   1. localhost/phalanx-base:bookworm: Debian bookworm with python3, from debootstrap and
#      `podman import` (needs root, debootstrap and a Debian mirror; built once);
#   2. localhost/phalanx:test: uid 10001 and ENTRYPOINT phalanx, as in deploy/Dockerfile (whose
#      python:3.11-slim base and download.pytorch.org index are not reachable here), with
#      Phalanx's dependencies (wheels downloaded once with this host's pip, torch's CPU wheel
#      from pip's find-links; a cached layer) and then this tree's Phalanx wheel (rebuilt on
#      every run, so the image runs the code under test).
# Usage: deploy/podman-image.sh [WORKDIR]   (default /var/tmp/phalanx-podman; reruns reuse it)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/phalanx-podman}
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$work"
if ! podman image exists localhost/phalanx-base:bookworm; then
    if [[ ! -x $work/rootfs/usr/bin/python3 ]]; then
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
    fi
    tar -C "$work/rootfs" -c . | podman import - localhost/phalanx-base:bookworm >/dev/null
fi
context=$work/context
rm -rf "$context" && mkdir -p "$context/phalanx" "$work/deps"
"$python" -m pip wheel --quiet --no-deps -w "$context/phalanx" "$repo" 2>/dev/null
wheel=$(ls "$context"/phalanx/phalanx-*.whl)
# the dependencies again only when the wheel's requirements changed
requires=$("$python" - "$wheel" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(l for l in z.read(name).decode().splitlines() if l.startswith("Requires-Dist")))
EOF
)
if [[ ! -f $work/deps.stamp || $(cat "$work/deps.stamp") != "$requires" ]]; then
    rm -rf "$work/deps" && mkdir -p "$work/deps"
    "$python" -m pip download --quiet -d "$work/deps" "$wheel" 2>/dev/null
    rm -f "$work"/deps/phalanx-*.whl
    printf '%s' "$requires" >"$work/deps.stamp"
fi
cp -al "$work/deps" "$context/deps"
cat >"$context/Containerfile" <<'EOF'
FROM localhost/phalanx-base:bookworm
RUN groupadd --system --gid 10001 phalanx \
    && useradd --system --uid 10001 --gid phalanx --home-dir /home/phalanx --create-home phalanx \
    && mkdir -p /data /etc/phalanx && chown phalanx:phalanx /data
COPY deps/ /wheels/
RUN python3 -m venv /opt/phalanx \
    && /opt/phalanx/bin/pip install --quiet --no-index /wheels/*.whl \
    && rm -rf /wheels /root/.cache
COPY phalanx/ /wheels/
RUN /opt/phalanx/bin/pip install --quiet --no-index --no-deps /wheels/*.whl \
    && rm -rf /wheels /root/.cache
ENV PATH=/opt/phalanx/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
USER phalanx
WORKDIR /home/phalanx
EXPOSE 7000 9100
ENTRYPOINT ["phalanx"]
CMD ["node", "--help"]
EOF
old=$(podman image inspect --format '{{.Id}}' localhost/phalanx:test 2>/dev/null || true)
podman build --quiet --layers -t localhost/phalanx:test -f "$context/Containerfile" "$context" \
    >/dev/null
rm -rf "$context"
new=$(podman image inspect --format '{{.Id}}' localhost/phalanx:test)
if [[ -n $old && $old != "$new" ]]; then
    podman rmi "$old" >/dev/null 2>&1 || true  # the previous build's top layer
fi
echo "built localhost/phalanx:test"
