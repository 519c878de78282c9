#!/usr/bin/env bash
# `make run`: migrate the SQLite database, create the admin user once, then start the web app and
# the scheduler together. Ctrl-C stops both (a second Ctrl-C at once, without waiting for tasks).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export DJANGO_DEBUG=${DJANGO_DEBUG:-1}
mkdir -p var

# A busy port fails here, before anything starts or changes (a second `make run` beside the first).
if ! "$PYTHON" - "$HOST" "$PORT" <<'PY'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver does
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sys.exit(f"error: {host}:{port} is not free ({exc.strerror}); is `make run` already running? "
                 f"Stop it, or pick another port: make run PORT={port + 1}")
PY
then
  exit 1
fi

"$PYTHON" manage.py migrate --noinput -v0

# The admin user and its password are made once. Later starts leave them alone: setting the
# password again would change its hash and log out every open admin session.
password_file=var/admin-password
admin_state=$("$PYTHON" manage.py shell -v0 -c '
import secrets
from pathlib import Path
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
path = Path("var/admin-password")
user = get_user_model().objects.filter(username="admin").first()
if user is None:
    if not path.exists() or not path.read_text().strip():
        path.touch(mode=0o600)  # readable by its owner only, before the secret is in it
        path.write_text(secrets.token_urlsafe(12) + "\n")
    get_user_model().objects.create_superuser("admin", "", path.read_text().strip())
    print("created")
elif not path.exists():
    print("no-file")
elif not check_password(path.read_text().strip(), user.password):  # checks only; never rehashes
    print("changed")
else:
    print("kept")
' | tail -n 1)
case "$admin_state" in
  created | kept) login="user: admin   password: $(cat "$password_file")  (in $password_file)" ;;
  changed) login="user: admin   password: the one you set ($password_file is out of date)" ;;
  *) login="user: admin   password: not in $password_file; to set one: make manage ARGS=\"changepassword admin\"" ;;
esac

pids=()
stop_now() {
  trap - INT TERM
  echo "stopping now, without waiting for running tasks (the next start records them interrupted)"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  exit 130
}
stop() {
  trap - EXIT
  trap stop_now INT TERM
  echo
  echo "stopping (running tasks may finish first; Ctrl-C again to stop at once)..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$PYTHON" manage.py runscheduler &
pids+=($!)
"$PYTHON" manage.py runserver --noreload "$HOST:$PORT" &
pids+=($!)

cat <<MSG

  Scheduler and web app are running.
    Admin:    http://$HOST:$PORT/admin/    $login
    API:      http://$HOST:$PORT/scheduler/status
    API docs: http://$HOST:$PORT/scheduler/docs/
    Commands: make manage ARGS="trigger_task crawl_site"   (any manage.py command, this setup's settings)
  Press Ctrl-C to stop both.

MSG
wait -n "${pids[@]}"
