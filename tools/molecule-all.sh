#!/usr/bin/env bash
# Run the molecule scenarios of the given roles, MOLECULE_JOBS at a time (default 1): each
# scenario has its own containers (named after its role), so they do not meet. Each one's
# output goes to .molecule-logs/<role>.log and is printed when it ends; the wall time of each
# and of the whole run is printed last. Exits non-zero if any scenario failed.
#
#   tools/molecule-all.sh supervisor redis celery_worker ...
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs="${MOLECULE_JOBS:-1}"
logs="$root/.molecule-logs"
mkdir -p "$logs"
started=$SECONDS

run_one() {
    local role="$1" log="$logs/$1.log" begin=$SECONDS rc
    make -C "$root" --no-print-directory molecule ROLE="$role" >"$log" 2>&1
    rc=$?
    printf '%s %s %s\n' "$role" "$rc" "$((SECONDS - begin))" >>"$logs/results"
    # One scenario's output at a time.
    flock "$logs/.print" sh -c 'printf "\n===== molecule %s (exit %s, %ss)\n" "$1" "$2" "$3"; cat "$4"' \
        _ "$role" "$rc" "$((SECONDS - begin))" "$log"
    return "$rc"
}
export -f run_one
export root logs

rm -f "$logs/results"
printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}
status=$?
echo
echo "molecule: $# scenarios, ${jobs} at a time, $((SECONDS - started))s in all"
sort "$logs/results" | while read -r role rc seconds; do
    printf '  %-16s %s  %4ss\n' "$role" "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "$seconds"
done
exit "$status"
