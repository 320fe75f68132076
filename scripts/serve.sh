#!/usr/bin/env bash
# Start a Celery worker and the web server together; Ctrl+C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
mkdir -p var/log
"$BIN/celery" -A config worker -B -Q default,exports,training,eval --pool=solo --loglevel=INFO \
  -n "demo@%h" > var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo
echo "Badcase Studio is running at http://$HOST:$PORT/"
echo "  API docs: http://$HOST:$PORT/api/docs/   health: http://$HOST:$PORT/healthz"
echo "  worker log: var/log/worker.log (pid $WORKER)"
echo "  demo logins: admin / badcase-admin, lead / badcase-lead, annotator / badcase-annotator, annotator2 / badcase-annotator2"
echo "  Ctrl+C stops the web server and the worker."
echo
"$BIN/python" manage.py runserver "$HOST:$PORT" --noreload
