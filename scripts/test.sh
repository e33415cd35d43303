#!/usr/bin/env bash
# Runs ferry's whole test suite. The integration tests start real git servers on loopback
# (nginx + fcgiwrap + git http-backend, sshd, git daemon), so this first installs the Debian
# packages they need when any is missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(git nginx-light fcgiwrap openssh-server openssh-client openssl chromium fonts-dejavu-core)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # The packages would start system nginx and sshd on ports 80 and 22; the tests run their
  # own on free ports, so keep the package scripts from starting any service.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python tools the tests drive: cargo-lambda (the Lambda Runtime API emulator) and cfn-lint
# (the SAM template's linter), both from PyPI, pinned: a new cfn-lint release can add warnings.
# pip does nothing when they are already there.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore cargo-lambda==1.9.2 cfn-lint==1.51.0
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

cargo test --workspace --locked "$@"
