#!/usr/bin/env bash
# run-gpu-tests.sh: the entry point of the GPU test bundle made by tooling/scripts/gpu-bundle.mjs. Runs the
# CUDA check scripts, every package's vitest suite and the benchmarks with the bundled Node, on a Linux
# x86-64 CUDA machine that has neither Node.js nor network access.
#
#   ./run-gpu-tests.sh [results-folder]        (default ./gpu-results; created if missing)
#
# Tests run exactly as `pnpm test` runs them: each package's own vitest.config.ts (the shared preset), so
# workspace packages are read from src/ through the "@lowbit/source" export condition and the native addon
# from packages/kernels/build/Release (built with CUDA). Test files that use forEachDevice run every case on
# "cpu" and on each CUDA device the addon reports. Benchmarks (bench/*.js, prebundled) and
# packages/kernels/scripts/cuda-*.mjs import workspace packages through dist/.
#
# Environment:
#   LOWBIT_GPU_PACKAGES       package folders to test, e.g. "kernels tensor" (default: every package with tests)
#   LOWBIT_GPU_SKIP           steps to leave out, any of: checks tests bench
#   LOWBIT_GPU_TEST_TIMEOUT   seconds allowed per package suite (default 1800)
#   LOWBIT_GPU_BENCH_TIMEOUT  seconds allowed per benchmark (default 900)
#   LOWBIT_GPU_CHECK_TIMEOUT  seconds allowed per check script (default 600)
#   LOWBIT_GPU_ALLOW_NO_GPU=1 go on when the addon sees no CUDA device (everything then runs on the CPU)
#   LOWBIT_GPU_SANITIZER      run the check scripts under compute-sanitizer with this tool (memcheck,
#                             racecheck, initcheck or synccheck); needs compute-sanitizer on PATH
#                             (a CUDA toolkit's bin/), much slower
#
# Results (all under the results folder):
#   summary.txt               one PASS / FAIL line per step, with its time and log
#   failures.txt              every failed test (package, full name, first line of the error); for a suite
#                             that timed out or crashed, the test files without a result / the crash message
#   gpu.txt                   nvidia-smi, node, the addon's CUDA devices and gemm backend
#   checks/<script>.log       output of each CUDA check script
#   vitest/<pkg>.log | .junit.xml | .json   console output, JUnit XML and vitest's JSON report
#   bench/<pkg>-<name>.log    benchmark output
# Exit status: 0 when every step passed, 1 when any step failed, 2 when no CUDA device is visible.
set -uo pipefail

bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
results="${1:-./gpu-results}"
mkdir -p "$results/vitest" "$results/bench" "$results/checks" || exit 1
results="$(cd "$results" && pwd)"
summary="$results/summary.txt"
: >"$summary"
: >"$results/failures.txt"

export PATH="$bundle/bin:$PATH"
export NO_COLOR=1 # plain logs
skip=" ${LOWBIT_GPU_SKIP:-} "
failures=0
last_rc=0 # exit status of the last step

if ! node --version >/dev/null 2>&1; then
  echo "run-gpu-tests.sh: the bundled node ($bundle/bin/node) does not start on this machine." >&2
  exit 1
fi

record() { # record STATUS NAME DETAIL
  printf '%-4s  %-52s %s\n' "$1" "$2" "$3" | tee -a "$summary"
}

# step NAME LOG TIMEOUT DIR COMMAND...: runs COMMAND in DIR with its output in LOG; records PASS / FAIL.
step() {
  local name="$1" logfile="$2" limit="$3" dir="$4"
  shift 4
  local start=$SECONDS rc
  echo "==> $name"
  if command -v timeout >/dev/null 2>&1; then
    (cd "$dir" && timeout --kill-after=30 "$limit" "$@") >"$logfile" 2>&1
  else
    (cd "$dir" && "$@") >"$logfile" 2>&1
  fi
  rc=$?
  last_rc=$rc
  local took="$((SECONDS - start))s" where="log: ${logfile#"$results"/}"
  if [[ $rc -eq 0 ]]; then
    record PASS "$name" "$took, $where"
  else
    failures=$((failures + 1))
    local why="exit $rc"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then why="timed out after ${limit}s"; fi
    record FAIL "$name" "$took, $why, $where"
    tail -n 25 "$logfile" | sed 's/^/    | /'
  fi
}

# ---- the GPU ------------------------------------------------------------------------------------------------
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) ($(uname -m)), $(nproc 2>/dev/null || echo '?') CPUs"
  echo "# node $(node --version)"
  head -n 4 "$bundle/BUNDLE.txt" 2>/dev/null
  echo
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv 2>&1
    echo
    nvidia-smi 2>&1
  else
    echo "nvidia-smi: not found on PATH"
  fi
  echo
} >"$results/gpu.txt"
# What the addon itself sees (this is what forEachDevice and the checks use).
node -e '
  const { pathToFileURL } = require("node:url");
  import(pathToFileURL(process.argv[1]).href).then(({ getBinding }) => {
    const b = getBinding();
    const count = b.cudaDeviceCount();
    const devices = [];
    for (let i = 0; i < count; i++) devices.push({ ...b.deviceInfo(`cuda:${i}`), gemm: b.cudaGemmBackend(`cuda:${i}`) });
    console.log(JSON.stringify({ addon: b.version, cudaCompiled: b.cudaCompiled, cudaDeviceCount: count, cudaUnavailableReason: b.cudaUnavailableReason(), devices }, null, 2));
    process.exit(count > 0 ? 0 : 3);
  }).catch((e) => { console.error(e); process.exit(1); });
' "$bundle/packages/kernels/dist/index.js" >>"$results/gpu.txt" 2>&1
probe=$?
grep -A3 '^index,' "$results/gpu.txt" || true
if [[ $probe -eq 0 ]]; then
  record PASS "CUDA device visible to the addon" "gpu.txt"
else
  sed -n '/^{/,$p' "$results/gpu.txt"
  if [[ "${LOWBIT_GPU_ALLOW_NO_GPU:-0}" != "1" ]]; then
    record FAIL "CUDA device visible to the addon" "gpu.txt (set LOWBIT_GPU_ALLOW_NO_GPU=1 to run on the CPU anyway)"
    exit 2
  fi
  failures=$((failures + 1))
  record FAIL "CUDA device visible to the addon" "gpu.txt (going on: LOWBIT_GPU_ALLOW_NO_GPU=1)"
fi

# ---- CUDA check scripts (plain Node, the addon against its own CPU backend) -----------------------------------
if [[ "$skip" != *" checks "* ]]; then
  runner=(node)
  if [[ -n "${LOWBIT_GPU_SANITIZER:-}" ]]; then
    if ! command -v compute-sanitizer >/dev/null 2>&1; then
      echo "run-gpu-tests.sh: LOWBIT_GPU_SANITIZER is set but compute-sanitizer is not on PATH (add the CUDA toolkit's bin/)." >&2
      exit 1
    fi
    # --target-processes all: some checks rerun themselves in a child process (LOWBIT_CUBLAS=0).
    # --report-api-errors no: the out-of-memory checks fail cudaMallocFromPoolAsync on purpose, and every
    # unexpected CUDA API error already fails its check through the addon's own error checking.
    runner=(compute-sanitizer --tool "$LOWBIT_GPU_SANITIZER" --target-processes all --report-api-errors no --error-exitcode 99 node)
    export LOWBIT_CHECK_SMALL=1 # cuda-quant-check: small sizes, no benchmarks
  fi
  for script in "$bundle"/packages/kernels/scripts/cuda-*.mjs; do
    [[ -e "$script" ]] || continue
    name="$(basename "$script" .mjs)"
    args=()
    if [[ -n "${LOWBIT_GPU_SANITIZER:-}" ]]; then
      # Each script's own switch for small problems without timings (see the script's header).
      case "$name" in
        cuda-core-check) args=(--small) ;;
        cuda-nn-check) args=(--no-timing) ;;
      esac
    fi
    step "check $name${LOWBIT_GPU_SANITIZER:+ ($LOWBIT_GPU_SANITIZER)}" "$results/checks/$name.log" "${LOWBIT_GPU_CHECK_TIMEOUT:-600}" \
      "$bundle/packages/kernels" "${runner[@]}" "$script" ${args[@]+"${args[@]}"}
  done
fi

# ---- vitest suites --------------------------------------------------------------------------------------------
if [[ "$skip" != *" tests "* ]]; then
  if [[ -n "${LOWBIT_GPU_PACKAGES:-}" ]]; then
    packages=()
    for p in $LOWBIT_GPU_PACKAGES; do packages+=("packages/${p#packages/}"); done
  else
    mapfile -t packages <"$bundle/test-packages.txt"
  fi
  for dir in "${packages[@]}"; do
    [[ -n "$dir" ]] || continue
    pkg="$(basename "$dir")"
    if [[ ! -d "$bundle/$dir" ]]; then
      failures=$((failures + 1))
      record FAIL "vitest $pkg" "no such package in the bundle: $dir"
      continue
    fi
    step "vitest $pkg" "$results/vitest/$pkg.log" "${LOWBIT_GPU_TEST_TIMEOUT:-1800}" "$bundle/$dir" \
      node node_modules/vitest/vitest.mjs run \
      --reporter=default --reporter=junit --reporter=json \
      --outputFile.junit="$results/vitest/$pkg.junit.xml" --outputFile.json="$results/vitest/$pkg.json"
    grep -E '^ +(Test Files|Tests) ' "$results/vitest/$pkg.log" | sed 's/^ */    /'
    # Failed tests, one line each, from vitest's JSON report; when there is none (a timeout) or the run
    # failed without a failed test (a crashed worker, an unhandled error), what the console log tells.
    node -e '
      const fs = require("node:fs");
      const path = require("node:path");
      const [json, log, pkgDir, out, rc] = process.argv.slice(1);
      const pkg = path.basename(pkgDir);
      const lines = [];
      const text = fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "";
      if (fs.existsSync(json)) {
        const report = JSON.parse(fs.readFileSync(json, "utf8"));
        for (const suite of report.testResults ?? []) {
          if (suite.status === "failed" && (suite.assertionResults ?? []).length === 0)
            lines.push(`${suite.name}\t${String(suite.message ?? "").split("\n")[0]}`);
          for (const t of suite.assertionResults ?? [])
            if (t.status === "failed") lines.push(`${t.fullName}\t${String(t.failureMessages?.[0] ?? "").split("\n")[0]}`);
        }
      } else {
        const timedOut = rc === "124" || rc === "137";
        lines.push(`(no JSON report: the run did not finish${timedOut ? " before its timeout" : ""})`);
        // Test files that never reported a result in the console log.
        const reported = new Set([...text.matchAll(/^ [✓❯×↓] (\S+\.test\.ts)/gmu)].map((m) => m[1]));
        const all = [];
        const walk = (dir) => {
          if (!fs.existsSync(path.join(pkgDir, dir))) return;
          for (const e of fs.readdirSync(path.join(pkgDir, dir), { withFileTypes: true })) {
            const rel = `${dir}/${e.name}`;
            if (e.isDirectory() && e.name !== "node_modules") walk(rel);
            else if (e.name.endsWith(".test.ts")) all.push(rel);
          }
        };
        walk("test");
        walk("src");
        const unfinished = all.filter((f) => !reported.has(f)).sort();
        if (unfinished.length > 0) lines.push(`(no result from: ${unfinished.join(" ")})`);
      }
      if (rc !== "0" && lines.length === 0) {
        const hints = text.split("\n").filter((l) => /terminate called|what\(\):|Worker exited unexpectedly|Segmentation fault|core dumped/.test(l));
        lines.push(`(vitest failed without a failed test: ${hints.slice(0, 3).map((l) => l.trim()).join(" | ") || "see the log"})`);
      }
      for (const line of lines) fs.appendFileSync(out, `${pkg}\t${line}\n`);
    ' "$results/vitest/$pkg.json" "$results/vitest/$pkg.log" "$bundle/$dir" "$results/failures.txt" "$last_rc"
  done
fi

# ---- benchmarks -----------------------------------------------------------------------------------------------
if [[ "$skip" != *" bench "* ]]; then
  for bench in "$bundle"/packages/*/bench/*.js; do
    [[ -e "$bench" ]] || continue
    pkgdir="$(dirname "$(dirname "$bench")")"
    name="$(basename "$pkgdir")-$(basename "$bench" .js)"
    step "bench $name" "$results/bench/$name.log" "${LOWBIT_GPU_BENCH_TIMEOUT:-900}" "$pkgdir" node "$bench"
  done
fi

echo
if [[ $failures -eq 0 ]]; then
  echo "run-gpu-tests.sh: every step passed; results in $results"
  exit 0
fi
echo "run-gpu-tests.sh: $failures step(s) failed; see $summary and $results/failures.txt"
exit 1
