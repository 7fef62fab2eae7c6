# Sourced by scripts/*: make sure .venv exists and holds this checkout's dependencies.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUDITMW_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "auditmw needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv in $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.auditmw-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) ${AUDITMW_EXTRAS:-dev}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "==> installing auditmw[${AUDITMW_EXTRAS:-dev}] into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[${AUDITMW_EXTRAS:-dev}]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
