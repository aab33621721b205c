#!/usr/bin/env bash
# GPU check for `engine: vllm` (vLLM through Ray Serve LLM), on one GPU machine, offline.
#
#   benchmarks/gpu_check.sh            # from anywhere; runs in the repository root
#
# 1. nvidia-smi summary;
# 2. vLLM importable? If not: `pip install -e '.[gpu]'` (from $WHEELS with --no-index when set,
#    else the configured index; a machine without network reports that it cannot);
# 3. benchmarks/vllm_check.py: the Engine contract through Ray Serve LLM and serving figures;
# 4. benchmarks/serving.py --engines transformers,vllm (the mesh end to end; tolerated
#    when the flag does not exist yet).
# Prints one JSON object last (also $OUT/gpu_check.json when $OUT is set). Whole run bounded by
# BUDGET_S (default 480 s). Exit status: vllm_check's (0 when every contract check passed).
set -euo pipefail

cd "$(dirname "$0")/.."
BUDGET_S=${BUDGET_S:-480}
VARIANTS=${VARIANTS:-safetensors,gguf}
START=$SECONDS
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT

left() { echo $((BUDGET_S - (SECONDS - START))); }

if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=$(command -v python3 || command -v python || true)
fi
if [[ -z "$PY" ]]; then
  echo '{"ok": false, "error": "no python on this machine"}'
  exit 1
fi

echo "== GPU" >&2
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,utilization.gpu \
    --format=csv,noheader | tee "$RESULTS/gpu.txt" >&2 || true
  nvidia-smi -L >&2 || true
else
  echo "no nvidia-smi on this machine" | tee "$RESULTS/gpu.txt" >&2
fi

echo "== vLLM" >&2
INSTALL="not needed"
if "$PY" -c 'import vllm, ray.serve.llm' >"$RESULTS/import.log" 2>&1; then
  :
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  INSTALL="skipped: no GPU on this machine (vLLM is installed on GPU machines only)"
else
  echo "vLLM or Ray Serve LLM missing; trying pip install -e '.[gpu]'" >&2
  PIP_ARGS=(--retries 1 --timeout 15)
  if [[ -n "${WHEELS:-}" ]]; then
    PIP_ARGS+=(--no-index --find-links "$WHEELS" --no-build-isolation)
  fi
  PIP_RC=0
  timeout --kill-after=10 "$(($(left) / 2))" \
    "$PY" -m pip install "${PIP_ARGS[@]}" -e '.[gpu]' >"$RESULTS/install.log" 2>&1 || PIP_RC=$?
  if ((PIP_RC == 0)); then
    INSTALL="installed"
  elif ((PIP_RC == 124 || PIP_RC == 137)); then
    INSTALL="failed: pip ran out of time ($(tail -n 1 "$RESULTS/install.log" | cut -c1-200))"
  else
    WHY=$(grep -E "ERROR:|error: |No matching|Could not" "$RESULTS/install.log" |
      grep -vE "exited-with-error|generation-failed" | tail -n 3 || true)
    INSTALL="failed: $(echo "${WHY:-$(tail -n 3 "$RESULTS/install.log")}" | tr '\n' ' ' | cut -c1-400)"
    echo "cannot install the gpu extra here (no network or wheels?): see the report" >&2
  fi
fi
VLLM_VERSION=$("$PY" -c 'import vllm; print(vllm.__version__)' 2>/dev/null || echo "missing")
echo "vllm: $VLLM_VERSION ($INSTALL)" >&2

CHECK_RC=1
if [[ "$VLLM_VERSION" != "missing" ]] && (($(left) > 60)); then
  echo "== contract and figures (vllm_check.py, ${VARIANTS}; up to $(($(left) - 60)) s)" >&2
  CHECK_RC=0
  timeout --kill-after=15 "$(($(left) - 60))" "$PY" benchmarks/vllm_check.py \
    --variants "$VARIANTS" --out "$RESULTS/check.json" >"$RESULTS/check.stdout" \
    2>"$RESULTS/check.log" || CHECK_RC=$?
  tail -n 30 "$RESULTS/check.log" >&2 || true
fi

SERVING_RC=skipped
if [[ "$VLLM_VERSION" != "missing" ]] && (($(left) > 30)); then
  echo "== serving.py --engines transformers,vllm (up to $(($(left) - 10)) s)" >&2
  SERVING_RC=0
  timeout --kill-after=15 "$(($(left) - 10))" "$PY" benchmarks/serving.py \
    --engines transformers,vllm --repeats 1 --no-scheduler >"$RESULTS/serving.json" \
    2>"$RESULTS/serving.log" || SERVING_RC=$?
  tail -n 30 "$RESULTS/serving.log" >&2 || true
fi

REPORT=$(
  RESULTS="$RESULTS" INSTALL="$INSTALL" VLLM_VERSION="$VLLM_VERSION" CHECK_RC="$CHECK_RC" \
    SERVING_RC="$SERVING_RC" ELAPSED=$((SECONDS - START)) "$PY" - <<'EOF'
import json, os
from pathlib import Path

results = Path(os.environ["RESULTS"])


def read_json(name: str, log: str) -> object:
    """A step's JSON, else why it is missing (the tail of its log)."""
    path = results / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    try:  # serving.py prints other lines before its JSON object
        text = path.read_text()
        return json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        tail = (results / log).read_text()[-1500:] if (results / log).exists() else ""
        return {"error": "no JSON", "log_tail": tail}


def text(name: str) -> str:
    path = results / name
    return path.read_text().strip() if path.exists() else ""


report = {
    "gpu": text("gpu.txt"),
    "vllm": os.environ["VLLM_VERSION"],
    "install": os.environ["INSTALL"],
    "import_error": text("import.log")[-600:],
    "check_rc": int(os.environ["CHECK_RC"]),
    "check": read_json("check.json", "check.log"),
    "serving_rc": os.environ["SERVING_RC"],
    "serving": read_json("serving.json", "serving.log"),
    "elapsed_s": int(os.environ["ELAPSED"]),
}
print(json.dumps(report, indent=2))
EOF
)
echo "$REPORT"
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  echo "$REPORT" >"$OUT/gpu_check.json"
  cp "$RESULTS"/*.log "$OUT"/ 2>/dev/null || true
fi
exit "$CHECK_RC"
