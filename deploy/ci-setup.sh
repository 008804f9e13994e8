#!/usr/bin/env bash
# Tools the deploy tests need (Debian/Ubuntu, run as root): ip/tc (iproute2), nft/iptables for
# netns partitions and loss, docker-compose and promtool/prometheus to validate and scrape.
# Idempotent and quiet: installs only what is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deploy/ci-setup.sh: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's prometheus package may start a system service on :9090; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
exit 0
