#!/usr/bin/env bash
# Debian packages the tests need (ODBC driver manager and drivers; kcat for the Kafka tests;
# Prometheus, promtool and the Pushgateway for the operations tests; stunnel4 puts TLS in front of
# the Kafka test broker, which cannot serve it itself; Chromium for the browser test of `lgw report`'s
# HTML, driven by Playwright with this browser: `playwright install` downloads are never needed;
# a headless Java runtime for the Spark tests in local mode: tests/test_spark.py).
# Installs only what is missing.
set -euo pipefail
need=()
for pkg in unixodbc unixodbc-dev libsqliteodbc odbc-postgresql odbc-mariadb kcat prometheus prometheus-pushgateway stunnel4 chromium openjdk-17-jre-headless; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
