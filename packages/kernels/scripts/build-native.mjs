#!/usr/bin/env node
// Builds build/Release/lowbit_kernels.node with cmake-js (offline: Node-API headers come from the
// node-api-headers package, node-addon-api from node_modules). Incremental: CMake is configured only when
// the options below change or no cache exists; otherwise this is one `cmake --build` that does nothing
// when nothing changed.
//
// Environment:
//   LOWBIT_CUDA=0|1        force the CUDA backend off / on (default: on when a CUDA toolkit is found)
//   LOWBIT_CUDA_ARCHS      CMAKE_CUDA_ARCHITECTURES, e.g. "90" for a fast single-arch CI build
//                          (default "80-real;86-real;89-real;90")
//   LOWBIT_BUILD_JOBS      parallel compile jobs (default: the number of cores)
//   LOWBIT_BUILD_DIR       build directory relative to the package (default "build"; asan.sh uses "build-asan")
//   LOWBIT_SANITIZE        "address" for an ASan build (used by scripts/asan.sh)
//   CXX / CUDACXX          the C++ compiler / nvcc to use
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nativeDir = join(packageDir, "native");
const require = createRequire(join(packageDir, "package.json"));
const fixCommand = "pnpm --filter @lowbit/kernels build";

/** Prints one message and exits: missing tools are reported once, not as a wall of CMake errors. */
function fail(message) {
  console.error(`\n@lowbit/kernels: ${message}\n`);
  process.exit(1);
}

function onPath(command) {
  if (command.includes("/")) return existsSync(command);
  return (process.env.PATH ?? "").split(delimiter).some((dir) => dir !== "" && existsSync(join(dir, command)));
}

// ---- options --------------------------------------------------------------------------------------------
const cudaEnv = process.env.LOWBIT_CUDA;
let lowbitCuda = "AUTO";
if (cudaEnv === "0" || cudaEnv === "1") lowbitCuda = cudaEnv === "1" ? "ON" : "OFF";
else if (cudaEnv !== undefined && cudaEnv !== "") fail(`LOWBIT_CUDA must be 0 or 1 (or unset for auto-detection), not "${cudaEnv}".`);
const archs = process.env.LOWBIT_CUDA_ARCHS || "80-real;86-real;89-real;90";
if (!/^[0-9a-z;-]+$/i.test(archs)) fail(`LOWBIT_CUDA_ARCHS must look like "90" or "80-real;90", not "${archs}".`);
const jobsEnv = process.env.LOWBIT_BUILD_JOBS;
const jobs = jobsEnv ? Number.parseInt(jobsEnv, 10) : availableParallelism();
if (!Number.isInteger(jobs) || jobs < 1) fail(`LOWBIT_BUILD_JOBS must be a positive integer, not "${jobsEnv}".`);
const sanitize = process.env.LOWBIT_SANITIZE ?? "";
if (sanitize !== "" && sanitize !== "address") fail(`LOWBIT_SANITIZE must be empty or "address", not "${sanitize}".`);
const buildDir = resolve(packageDir, process.env.LOWBIT_BUILD_DIR || "build");

// ---- tools ------------------------------------------------------------------------------------------------
const cmakeProbe = spawnSync("cmake", ["--version"], { encoding: "utf8" });
if (cmakeProbe.error || cmakeProbe.status !== 0) {
  fail(
    "cannot build the native addon: `cmake` was not found on PATH.\n" +
      "Install CMake >= 3.19 (apt-get install cmake, brew install cmake, or https://cmake.org/download/), then run:\n" +
      `  ${fixCommand}`,
  );
}
const cxx = process.env.CXX;
if (cxx ? !onPath(cxx.split(" ")[0] ?? cxx) : !["c++", "g++", "clang++"].some(onPath)) {
  fail(
    `cannot build the native addon: no C++ compiler was found (${cxx ? `CXX="${cxx}" does not exist` : "looked for c++, g++ and clang++ on PATH"}).\n` +
      "Install one with C++17 support (apt-get install g++, xcode-select --install), then run:\n" +
      `  ${fixCommand}`,
  );
}

let BuildSystem;
try {
  ({ BuildSystem } = require("cmake-js"));
} catch {
  fail(`cmake-js is not installed; run \`pnpm install\` in the repository root, then \`${fixCommand}\`.`);
}
let nodeAddonApiDir;
try {
  // (its include_dir is relative to the current directory; CMake needs an absolute path)
  nodeAddonApiDir = dirname(require.resolve("node-addon-api/package.json"));
} catch {
  fail(`node-addon-api is not installed; run \`pnpm install\` in the repository root, then \`${fixCommand}\`.`);
}

// ---- configure when needed, then build --------------------------------------------------------------------
const pkg = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8"));
// These become -D<name>=<value> (cmake-js's --CD options).
const cMakeOptions = {
  LOWBIT_CUDA: lowbitCuda,
  LOWBIT_CUDA_ARCHS: archs,
  LOWBIT_SANITIZE: sanitize,
  NODE_ADDON_API_DIR: nodeAddonApiDir,
};
const stampPath = join(buildDir, "lowbit-options.json");
const stamp = JSON.stringify({ cMakeOptions, node: process.versions.modules, cxx: cxx ?? "", cudacxx: process.env.CUDACXX ?? "" });
const configured = existsSync(join(buildDir, "CMakeCache.txt")) && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp;

const buildSystem = new BuildSystem({
  directory: nativeDir,
  out: buildDir,
  config: "Release",
  parallel: jobs,
  cMakeOptions,
  noLog: true,  // cmake-js's own chatter; CMake and the compiler still print their output
});
// cmake-js decides "Node-API addon, use node-api-headers, download nothing" from package.json next to
// CMakeLists.txt; ours lives one level up, so pass on what this package.json declares.
buildSystem.options.isNodeApi = Array.isArray(pkg.binary?.napi_versions);

try {
  mkdirSync(buildDir, { recursive: true });
  if (!configured) {
    console.log(`@lowbit/kernels: configuring (CUDA ${lowbitCuda}, archs ${archs}${sanitize ? `, sanitize=${sanitize}` : ""}) in ${buildDir}`);
    await buildSystem.configure();
    writeFileSync(stampPath, stamp);
  }
  await buildSystem.build();
} catch (error) {
  // CMake and the compiler have already printed their diagnostics above.
  fail(`the native build failed (${error instanceof Error ? error.message : String(error)}). Fix the errors above and run \`${fixCommand}\` again.`);
}
const output = join(buildDir, "Release", "lowbit_kernels.node");
if (!existsSync(output)) fail(`the build finished but ${output} is missing.`);
console.log(`@lowbit/kernels: ${output}`);
