#!/bin/sh
# Debian 12 packages the product, its tests and its lab need. Sourced by tests/run and lab/run.
# Runtime (what the .deb depends on) first, then the real tools the tests drive.
SKAT_RUNTIME="nftables python3-nftables python3-pyroute2 python3-systemd python3-jsonschema iproute2 keepalived"
SKAT_TEST_TOOLS="python3-pytest python3-hypothesis python3-scapy arping ndisc6 tcpdump iperf3 ucarp curl iputils-ping procps psmisc util-linux man-db git tshark netsniff-ng nginx-light python3-h11"
SKAT_PACKAGING="debootstrap systemd systemd-container dpkg-dev debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject lintian fakeroot"

skat_install() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
