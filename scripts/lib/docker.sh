# Shared by the scripts that run Docker for the tests (compose-smoke, fresh-machine): a log prefix,
# the "cannot run here" exit (77, which the tests turn into a skip with the reason), and a Docker
# engine that is started when none answers and stopped again by whoever started it.
# Source it after setting LOG_NAME; call stop_dockerd from the script's EXIT trap.

CANNOT_RUN=77
log() { echo "$LOG_NAME: $*" >&2; }
cannot_run() { log "SKIPPED: Docker cannot run here: $*"; exit "$CANNOT_RUN"; }

started_dockerd=
DOCKERD_LOG=
ensure_docker() {
  command -v docker >/dev/null || cannot_run "no docker client (TVMQ_WITH_DOCKER=1 scripts/setup installs docker.io)"
  docker info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null \
    || cannot_run "no Docker engine answers and dockerd is not installed (TVMQ_WITH_DOCKER=1 scripts/setup)"
  [[ $(id -u) -eq 0 ]] || cannot_run "no Docker engine answers and starting dockerd needs root"
  DOCKERD_LOG=$(mktemp /tmp/tvmq-dockerd.XXXXXX.log)
  log "starting dockerd (log: $DOCKERD_LOG)"
  dockerd >"$DOCKERD_LOG" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$started_dockerd" 2>/dev/null || break
    sleep 1
  done
  local why; why=$(grep -iE 'level=(error|fatal)' "$DOCKERD_LOG" | tail -n 3)
  stop_dockerd
  cannot_run "dockerd did not come up: ${why:-see its log above}"
}

stop_dockerd() {
  [[ -n "$started_dockerd" ]] || return 0
  log "stopping the dockerd this script started"
  kill "$started_dockerd" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 1; done
  rm -f "$DOCKERD_LOG"
  started_dockerd=
}

# Local base images (scripts/build-base-images) when none were given; sets and exports the
# variables it prints (BASE_IMAGE, REDIS_IMAGE, FRESH_IMAGE, for the names asked for).
base_images() {
  local images rc=0
  images=$(scripts/build-base-images "$@") || rc=$?
  [[ $rc -ne 77 ]] || cannot_run "the local base images cannot be built here (the reason is above)"
  [[ $rc -eq 0 ]] || { log "scripts/build-base-images failed (exit $rc)"; exit 1; }
  eval "$images"
  # shellcheck disable=SC2046  # the names it printed, one word each
  export $(printf '%s\n' "$images" | cut -d= -f1)
}

# Timings, printed by the EXIT trap (print_timings) under "<LOG_NAME> timings:", which the tests
# copy into their summary.
TIMINGS=()
now() { date +%s; }
timing() { TIMINGS+=("$(printf '%-32s %s' "$1" "$2")"); log "$1: $2"; }
print_timings() {
  [[ ${#TIMINGS[@]} -gt 0 ]] || return 0
  printf '%s timings:\n' "$LOG_NAME" >&2
  printf '  %s\n' "${TIMINGS[@]}" >&2
}
