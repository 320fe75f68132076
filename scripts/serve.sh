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
"$BIN/python" manage.py runserver "$HOST:$PORT" --noreload
