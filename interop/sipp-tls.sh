#!/usr/bin/env bash
# Installs a SIPp that speaks SIP over TLS (`-t l1`) into a private prefix and prints the
# path of its launcher.
#
# Debian 12's `sip-tester` is built without TLS ("To use a TLS transport you must compile
# SIPp with OpenSSL"); Debian 13's is built with wolfSSL. Its binary needs glibc 2.38, newer
# than Debian 12's, so it runs here with Debian 13's own loader and libraries from the
# prefix: nothing on the system is replaced. Only the Debian archive is contacted.
# That build cannot send over TLS as packaged (wolfSSL's SSL_get_fd answers -1 for the BIO
# SIPp attaches); interop/sipp-tls-fd.c, preloaded, answers with the socket as OpenSSL does.
#
#   interop/sipp-tls.sh [PREFIX]      (default /opt/sipp-tls; needs root for apt's lists)
set -euo pipefail
prefix=${1:-/opt/sipp-tls}
launcher="$prefix/sipp"
# `sipp -v` exits 99.
has_tls() { case "$("$1" -v 2>&1 || true)" in *-TLS*) return 0 ;; *) return 1 ;; esac; }
if [ -x "$launcher" ] && has_tls "$launcher"; then
  echo "$launcher"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{lists/partial,cache/archives/partial,debs}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root -qq)
apt-get "${apt_opts[@]}" update >&2
# sip-tester and everything its binary loads (checked below: nothing may come from the
# system's own libraries, which belong to another glibc).
(cd "$work/debs" && apt-get "${apt_opts[@]}" download sip-tester libwolfssl42t64 libgsl28 \
  libgslcblas0 libpcap0.8t64 libsctp1 libc6 libstdc++6 libgcc-s1 libncursesw6 libtinfo6 \
  libdbus-1-3 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblzma5 libzstd1 liblz4-1 >&2)
rm -rf "$prefix"
mkdir -p "$prefix"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$prefix/root"; done
lib="$prefix/root/usr/lib/x86_64-linux-gnu"
cc -shared -fPIC -O2 -o "$prefix/sipp-tls-fd.so" "$(dirname "$0")/sipp-tls-fd.c" -ldl
cat >"$launcher" <<LAUNCH
#!/bin/sh
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" --preload "$prefix/sipp-tls-fd.so" \\
  "$prefix/root/usr/bin/sipp" "\$@"
LAUNCH
chmod +x "$launcher"
if "$lib/ld-linux-x86-64.so.2" --library-path "$lib" --list "$prefix/root/usr/bin/sipp" \
  | grep '=>' | grep -v "$lib"; then
  echo "sipp-tls: the libraries above would come from the system, not $prefix" >&2
  exit 1
fi
has_tls "$launcher" || { echo "sipp-tls: $launcher has no TLS" >&2; exit 1; }
echo "$launcher"
