#!/usr/bin/env bash
# Builds the Debian packages from this repository:
#   installers/linux/build-deb.sh [agent|collector|all] [--version V] [--out DIR] [--wheelhouse DIR]
# -> DIR/shoumi-agent_V_ARCH.deb, DIR/shoumi-collector_V_ARCH.deb and DIR/SHA256SUMS (default DIR: dist).
#
# Each package carries its own virtual environment (/opt/shoumi-agent, /opt/shoumi-collector) with the
# project and every Python dependency, built here against Debian's python3, so installing needs no
# network. Needs: python3 with venv (python3-venv), gcc and python3-dev for the C parts, dpkg-deb.
# --wheelhouse reuses (and fills) a folder of wheels, so a rebuild does not download again.
set -euo pipefail

what="all" version="" out="" wheelhouse=""
while [ $# -gt 0 ]; do
  case "$1" in
    agent|collector|all) what="$1"; shift ;;
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
PY="${SHOUMI_DEB_PYTHON:-/usr/bin/python3}"
out="${out:-$repo/dist}"
[ -n "$version" ] || version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
case "$version" in
  ''|*[!A-Za-z0-9.+~-]*) echo "build-deb.sh: invalid version '$version'" >&2; exit 2 ;;
esac
command -v dpkg-deb >/dev/null || { echo "build-deb.sh: dpkg-deb is required" >&2; exit 2; }
"$PY" -c 'import venv, ensurepip' 2>/dev/null || { echo "build-deb.sh: $PY needs venv (apt-get install python3-venv)" >&2; exit 2; }
arch="$(dpkg --print-architecture)"
pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
pynext="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
wheelhouse="${wheelhouse:-$work/wheels}"
mkdir -p "$wheelhouse"

echo "build-deb.sh: wheels of the project and its dependencies ($PY $pyver)"
"$PY" -m venv "$work/build-env"
"$work/build-env/bin/pip" install --quiet --upgrade pip wheel setuptools
# The project's own wheel is always rebuilt (the sources may have changed); dependencies are reused.
rm -f "$wheelhouse"/shoumi-*.whl
"$work/build-env/bin/pip" wheel --quiet --find-links "$wheelhouse" -w "$wheelhouse" "$repo[postgres]"

# The agent's own dependencies, with the pins pyproject.toml gives them (one place for versions):
# the agent package carries only these, not the collector's web stack.
agent_requirements() {
  "$PY" - "$repo/pyproject.toml" <<'PYTHON'
import re, sys, tomllib
wanted = {"watchdog", "psutil", "grpcio", "protobuf", "cryptography"}
for requirement in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    if re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() in wanted:
        print(requirement)
PYTHON
}

# stage PACKAGE REQUIREMENT...: a venv at /opt/PACKAGE inside the package root, paths fixed for
# where it is installed
stage() {
  local pkg="$1" root="$work/$1" prefix="/opt/$1"
  local venv="$root$prefix"
  shift
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-index --find-links "$wheelhouse" "$@"
  if [ -n "${project_without_deps:-}" ]; then
    "$venv/bin/pip" install --quiet --no-index --find-links "$wheelhouse" --no-deps shoumi
  fi
  "$venv/bin/pip" uninstall --quiet --yes pip setuptools wheel >/dev/null 2>&1 || true
  find "$venv" -name '__pycache__' -type d -prune -exec rm -rf {} +
  rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
  # scripts name the interpreter by its staging path: name the installed one instead
  grep -rlI --null "$venv" "$venv/bin" "$venv/pyvenv.cfg" 2>/dev/null | xargs -0 -r sed -i "s|$venv|$prefix|g"
  find "$venv" -name 'direct_url.json' -delete
  # byte-code compiled now, with the installed paths in it: dpkg then owns (and removes) every file
  "$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib" >/dev/null
  install -d "$root/DEBIAN" "$root/usr/share/doc/$pkg" "$root/lib/systemd/system"
  install -m 0644 "$repo/README.md" "$root/usr/share/doc/$pkg/README.md"
  printf 'Shoumi (守密)\nSee /usr/share/doc/%s/README.md and the project repository for the licence.\n' "$pkg" \
    > "$root/usr/share/doc/$pkg/copyright"
  install -m 0644 "$here/$pkg.service" "$root/lib/systemd/system/$pkg.service"
  for script in postinst prerm postrm config; do
    [ -f "$here/deb/${pkg#shoumi-}/$script" ] && install -m 0755 "$here/deb/${pkg#shoumi-}/$script" "$root/DEBIAN/$script"
  done
  [ -f "$here/deb/${pkg#shoumi-}/templates" ] && install -m 0644 "$here/deb/${pkg#shoumi-}/templates" "$root/DEBIAN/templates"
  return 0
}

control() {  # control PACKAGE DEPENDS DESCRIPTION
  local pkg="$1" root="$work/$1"
  local size
  size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
  cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: Shoumi <shoumi@localhost>
Section: admin
Priority: optional
Installed-Size: $size
Depends: python3 (>= $pyver), python3 (<< $pynext), $2
Description: $3
CONTROL
  if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f | sed 's|^|/|' | sort) > "$root/DEBIAN/conffiles"
  fi
  find "$root" -path "$root/DEBIAN" -prune -o -type f -print0 | xargs -0 chmod go-w
  dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "build-deb.sh: $out/${pkg}_${version}_${arch}.deb"
}

if [ "$what" = agent ] || [ "$what" = all ]; then
  mapfile -t requirements < <(agent_requirements)
  project_without_deps=1 stage shoumi-agent "${requirements[@]}"
  root="$work/shoumi-agent"
  rm -f "$root/opt/shoumi-agent/bin/shoumi-collector" "$root/opt/shoumi-agent/bin/shoumi-payroll"
  install -m 0755 "$here/shoumi-agent-service" "$root/opt/shoumi-agent/bin/shoumi-agent-service"
  install -d -m 0755 "$root/etc/shoumi-agent" "$root/usr/lib/sysctl.d"
  install -m 0644 "$here/agent.toml.example" "$root/etc/shoumi-agent/agent.toml"
  install -m 0644 "$here/60-shoumi-agent.conf" "$root/usr/lib/sysctl.d/60-shoumi-agent.conf"
  control shoumi-agent "debconf (>= 0.5) | debconf-2.0" "Shoumi (守密) workstation agent
 Watches the folders a company declares sensitive (who read which file with which program, copies,
 writes to removable media), signs what it sees and streams it to the Shoumi collector. Only
 metadata and hashes leave the machine, never file content."
fi
if [ "$what" = collector ] || [ "$what" = all ]; then
  stage shoumi-collector "shoumi[postgres]"
  root="$work/shoumi-collector"
  install -d -m 0755 "$root/etc/shoumi-collector"
  install -m 0640 "$here/collector.env.example" "$root/etc/shoumi-collector/collector.env"
  control shoumi-collector "adduser" "Shoumi (守密) collector
 Verifies and stores the agents' signed events (SQLite built in, PostgreSQL to scale), raises alerts,
 and serves the web UI where security triages, HR confirms cases and IT runs the fleet."
fi

(cd "$out" && sha256sum shoumi-*_"${version}"_*.deb > "SHA256SUMS.new" && \
  { [ -f SHA256SUMS ] && grep -v "_${version}_" SHA256SUMS || true; } >> SHA256SUMS.new && \
  sort -k2 SHA256SUMS.new > SHA256SUMS && rm -f SHA256SUMS.new)
echo "build-deb.sh: checksums in $out/SHA256SUMS (verify with: cd $out && sha256sum -c SHA256SUMS)"
