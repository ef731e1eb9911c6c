#!/usr/bin/env bash
# Installs what facestream needs into .venv (idempotent; a no-op when nothing changed).
# System packages (Java for Kafka, Maven to fetch it, PostgreSQL, mosquitto, podman) are installed with
# apt-get when missing and we are root; the Python dependencies are pinned in
# pyproject.toml. face_recognition is installed with --no-deps: it declares dlib, which
# pip would build from source, while dlib-bin (a pinned dependency) is dlib prebuilt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
py=${PYTHON_BOOTSTRAP:-python3}

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
# A real MQTT broker (and mosquitto_passwd) for notify's MQTT tests (tests/conftest.py).
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# Containers without a Docker engine (tests/containers, scripts/podman.sh): podman with
# runc (crun fails on these machines' cgroups), and debootstrap for the local Debian base.
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[install] please install: ${missing[*]}" >&2; exit 1
  fi
fi

# promtool and a Prometheus server (tests/deploy checks the alert rules and dashboards,
# tests/integration scrapes the running platform). Without Recommends: no node exporter.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install prometheus" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "[install] please install: prometheus (promtool, prometheus)" >&2; exit 1
  fi
fi

# A real browser for tests/browser and `make screenshots` (Playwright drives it; it never
# downloads one of its own).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install chromium" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[install] please install: chromium" >&2; exit 1
  fi
fi

stamp=$venv/.installed-$(cat "$root/pyproject.toml" "$0" "$root/scripts/fetch_swagger_ui.py" | md5sum | cut -c1-12)
[ -f "$stamp" ] && exit 0
echo "[install] creating $venv (pinned dependencies from pyproject.toml)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$root[dev]"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps face_recognition==1.3.0
# Swagger UI's files, so that the services' /docs pages work offline (common/docs.py)
"$venv/bin/python" "$root/scripts/fetch_swagger_ui.py" "$venv/share/facestream/swagger-ui"
rm -f "$venv"/.installed-*
touch "$stamp"
echo "[install] done" >&2
