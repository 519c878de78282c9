#!/usr/bin/env bash
# `make run`: migrate the SQLite database, make sure an admin can log in, then start the web app
# and the scheduler together. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export DJANGO_DEBUG=${DJANGO_DEBUG:-1}
mkdir -p var

"$PYTHON" manage.py migrate --noinput -v0
password_file=var/admin-password
if [ ! -s "$password_file" ]; then
  "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(12))' > "$password_file"
  chmod 600 "$password_file"
fi
ADMIN_PASSWORD=$(cat "$password_file") "$PYTHON" manage.py shell -v0 -c '
import os
from django.contrib.auth import get_user_model
User = get_user_model()
user, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
user.is_staff = user.is_superuser = True
user.set_password(os.environ["ADMIN_PASSWORD"])
user.save()
'

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
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
    Admin:    http://$HOST:$PORT/admin/    user: admin   password: $(cat "$password_file")
    API:      http://$HOST:$PORT/scheduler/status
    API docs: http://$HOST:$PORT/scheduler/docs/
  Press Ctrl-C to stop both.

MSG
wait -n "${pids[@]}"
