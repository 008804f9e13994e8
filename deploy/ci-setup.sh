#!/usr/bin/env bash
# Tools the deploy tests need (Debian/Ubuntu, run as root): ip/tc (iproute2), nft/iptables for
# netns partitions and loss, docker-compose and promtool/prometheus to validate and scrape, and
# podman with runc, catatonit (its pause image), debootstrap (a base image without a registry,
# deploy/podman-image.sh), podman-compose and CNI's dnsname plugin for the slow container tests.
# Idempotent and quiet: installs only what is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v catatonit >/dev/null || need+=(catatonit)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v podman-compose >/dev/null || need+=(podman-compose)
# podman 4.3's CNI networks resolve container names only with the dnsname plugin (compose DNS)
[[ -e /usr/lib/cni/dnsname ]] || need+=(golang-github-containernetworking-plugin-dnsname)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deploy/ci-setup.sh: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# podman: runc (crun fails on this kernel's cgroups) and no default ulimits (not settable here)
conf=/etc/containers/containers.conf
if [[ $(id -u) -eq 0 && ! -e $conf ]]; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$conf"
elif [[ -e $conf ]] && ! grep -q '^default_ulimits *= *\[\]' "$conf"; then
    echo "deploy/ci-setup.sh: $conf should set default_ulimits = [] and runtime = \"runc\"" >&2
fi
# Debian's prometheus package may start a system service on :9090; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
exit 0
