#!/usr/bin/env bash
# Start a Celery worker and the web server together; Ctrl+C stops both.
# The worker takes what `manage.py seed_demo` queued before it started (the demo lineage: SFT then DPO on
# the demo model, and their evaluation runs); the filesystem broker keeps those messages under var/broker.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
LOG_DIR=${VAR_DIR:-var}/log
mkdir -p "$LOG_DIR"
"$BIN/python" manage.py check --fail-level ERROR > /dev/null  # loads the settings: makes var/secret_key once
"$BIN/celery" -A config worker -B -Q default,exports,training,eval --pool=solo --loglevel=INFO \
  -n "demo@%h" > "$LOG_DIR/worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo
echo "Badcase Studio is running at http://$HOST:$PORT/"
echo "  API docs: http://$HOST:$PORT/api/docs/   health: http://$HOST:$PORT/healthz"
echo "  worker log: $LOG_DIR/worker.log (pid $WORKER)"
echo "  demo logins: admin / badcase-admin, lead / badcase-lead, annotator / badcase-annotator, annotator2 / badcase-annotator2"
echo "  on the first start the worker trains the demo lineage (SFT, then DPO; base, SFT and DPO evaluated)"
echo "  in the background, a few minutes: http://$HOST:$PORT/p/sales-agent/training/"
echo "  Ctrl+C stops the web server and the worker."
echo
# The web server runs as it would in production, DEBUG off: the product's own 404 and 500 pages, no
# tracebacks in the browser. It serves plain HTTP on this machine, so its cookies go without Secure and
# there is no HTTPS redirect; runserver --insecure serves the static files. WEB_DEBUG=1 gives Django's debug
# pages instead. The secret key is the one the DEBUG steps before it kept under var/ (SECRET_KEY wins).
SECRET_KEY=${SECRET_KEY:-$(cat "${VAR_DIR:-var}/secret_key")} DEBUG=${WEB_DEBUG:-0} SECURE_COOKIES=0 \
  SECURE_SSL_REDIRECT=0 SECURE_HSTS_SECONDS=0 \
  MODEL_ENDPOINT_ALLOWED_HOSTS=${MODEL_ENDPOINT_ALLOWED_HOSTS:-localhost,127.0.0.1,::1} \
  "$BIN/python" manage.py runserver "$HOST:$PORT" --noreload --insecure
