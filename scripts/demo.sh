#!/usr/bin/env bash
# make demo: the main job on the local stack. Grows as features land.
set -euo pipefail
echo "demo: the stack is up:"
scripts/stack.sh status
echo "demo: the projector itself has not landed yet (issue 4); nothing more to show." >&2
exit 1
