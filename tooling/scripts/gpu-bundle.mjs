#!/usr/bin/env node
// Builds dist-gpu/lowbit-gpu-bundle.tar.xz: a self-contained archive that runs lowbit's vitest suites,
// benchmarks and CUDA check scripts on a Linux x86-64 CUDA machine with neither Node.js nor network access.
//
//   pnpm gpu:bundle                                  (all CUDA architectures: slow, the release default)
//   LOWBIT_CUDA_ARCHS=90 pnpm gpu:bundle             (H100 only: one arch, much faster to compile)
//   node tooling/scripts/gpu-bundle.mjs [--out FILE] [--skip-native] [--no-strip] [--keep-stage]
//                                       [--allow-dist-failures]
//     --skip-native            reuse packages/kernels/build-gpu-bundle/ as it is
//     --no-strip               ship the node binary byte for byte (symbols included, ~1.5 MiB more)
//     --keep-stage             keep the unpacked tree in dist-gpu/stage/ for inspection
//     --allow-dist-failures    a package whose tsup build fails (say, mid-edit) ships without dist/ instead
//                              of stopping the bundle; its tests still run (they read src/); the failure is
//                              listed in BUNDLE.txt
//
// What goes in (under one top folder, lowbit-gpu-bundle/, laid out like the repository so every relative
// import and workspace link of the tests resolves unchanged):
//   bin/node                       this machine's `node` (symbols stripped unless --no-strip)
//   run-gpu-tests.sh               the one entry point (copied from tooling/scripts/run-gpu-tests.sh)
//   BUNDLE.txt                     what was bundled: git commit, dirty files, node version, CUDA archs
//   packages/<pkg>/                the package's git-visible files (src, test, fixtures, scripts, configs;
//                                  not native/), dist/ built here with tsup into the bundle, and for
//                                  @lowbit/kernels build/Release/lowbit_kernels.node built WITH CUDA
//   packages/<pkg>/bench/*.bench.js   the bench/*.ts scripts prebundled with esbuild (no tsx needed)
//   tooling/vitest, tooling/typescript   the vitest preset and the tsconfig base the packages extend
//   fixtures/                      the repository's vendored checkpoints
//   node_modules/.pnpm/...         only the packages needed at run time: vitest and its dependency
//                                  closure, plus the runtime dependencies of our packages
//                                  (@huggingface/tokenizers, @huggingface/jinja, ...), copied from this
//                                  checkout's pnpm layout with relative symlinks between them
//
// The closure walk follows `dependencies`, installed `optionalDependencies` and non-optional
// `peerDependencies`; optional peers are linked only when something else brings them in (so vite's
// optional peers esbuild / tsx / @types/node stay out, @vitest/mocker still sees vite), and every package
// resolves to ONE copy of vitest (the one tooling/vitest links), so the preset and the tests share it.
// Type declarations and source maps of third-party packages, and vite's lazily imported CSS compiler
// lightningcss, are left out to keep the archive small.
//
// The native addon is built in packages/kernels/build-gpu-bundle/ (the normal build/ is left alone) with
// LOWBIT_CUDA=1, LOWBIT_CUDA_ARCHS from the environment (default: build-native.mjs's full list) and
// LOWBIT_BUILD_JOBS (default 2). Package dist/ folders are written straight into the bundle, so the
// workspace's own dist/ folders are not touched. esbuild comes from tsup's dependencies (no new
// dependency). Needs GNU tar and xz on PATH.
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const pnpmStore = join(repoRoot, "node_modules", ".pnpm");
const BUNDLE_NAME = "lowbit-gpu-bundle";
const SIZE_GOAL_MIB = 40;
/** Kernels dependencies that only its install/build script uses; nothing imports them at run time. */
const BUILD_ONLY_DEPENDENCIES = new Set(["cmake-js", "node-addon-api", "node-api-headers"]);
/**
 * Third-party dependencies left out although declared: nothing the tests run ever loads them.
 * lightningcss (10 MiB native binary): vite imports it lazily, only to transform or minify CSS.
 */
const NEVER_LOADED = new Set(["lightningcss"]);
/** Workspace tooling packages the bundled packages need at test time (tsup's preset is build-only). */
const TOOLING_PACKAGES = ["tooling/vitest", "tooling/typescript"];

// ---- arguments ------------------------------------------------------------------------------------------

function usage(message) {
  console.error(`gpu-bundle: ${message}`);
  console.error("usage: node tooling/scripts/gpu-bundle.mjs [--out FILE] [--skip-native] [--no-strip] [--keep-stage] [--allow-dist-failures]");
  process.exit(2);
}

const options = {
  out: join(repoRoot, "dist-gpu", `${BUNDLE_NAME}.tar.xz`),
  skipNative: false,
  strip: true,
  keepStage: false,
  allowDistFailures: false,
};
{
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--out") {
      const value = args[++i];
      if (value === undefined) usage("--out needs a file name");
      options.out = resolve(value);
    } else if (arg === "--skip-native") options.skipNative = true;
    else if (arg === "--no-strip") options.strip = false;
    else if (arg === "--keep-stage") options.keepStage = true;
    else if (arg === "--allow-dist-failures") options.allowDistFailures = true;
    else usage(`unknown argument "${arg}"`);
  }
}

// ---- helpers ----------------------------------------------------------------------------------------------

function fail(message) {
  console.error(`\ngpu-bundle: ${message}\n`);
  process.exit(1);
}

function log(message) {
  console.log(`[gpu-bundle] ${message}`);
}

/** Runs a command with inherited stdio; fails the bundle with `what` when it exits non-zero. */
function run(command, args, what, opts = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", ...opts });
  if (result.error) fail(`${what}: could not start ${command}: ${result.error.message}`);
  if (result.status !== 0) fail(`${what} failed (${command} exited with ${result.status ?? result.signal}).`);
}

/** Output of a command (trimmed), or null when it fails. */
function capture(command, args, opts = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  return result.status === 0 ? result.stdout.trim() : null;
}

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

/** A relative symlink at `linkPath` to `target` (both absolute paths inside the stage). */
function linkRelative(target, linkPath) {
  mkdirSync(dirname(linkPath), { recursive: true });
  if (existsSync(linkPath) || isSymlink(linkPath)) rmSync(linkPath, { recursive: true, force: true });
  symlinkSync(relative(dirname(linkPath), target), linkPath);
}

function isSymlink(path) {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Files of `dir` (relative to the repo) that git sees: tracked and untracked-not-ignored, still on disk. */
function gitFiles(dir) {
  const out = capture("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", dir], { cwd: repoRoot });
  if (out === null) fail(`git ls-files failed in ${repoRoot} (the bundler needs a git checkout).`);
  const files = [...new Set(out.split("\0").filter((f) => f !== ""))];
  return files.filter((f) => {
    try {
      return lstatSync(join(repoRoot, f)).isFile();
    } catch {
      return false; // tracked but deleted in the working tree
    }
  });
}

function copyRepoFile(rel, stage) {
  const dst = join(stage, rel);
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(join(repoRoot, rel), dst);
  chmodSync(dst, statSync(join(repoRoot, rel)).mode & 0o777);
}

function mib(bytes) {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

function dirBytes(dir) {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += dirBytes(path);
    else if (entry.isFile()) total += statSync(path).size;
  }
  return total;
}

// ---- workspace ------------------------------------------------------------------------------------------

if (!existsSync(pnpmStore)) fail(`${relative(repoRoot, pnpmStore)} does not exist: run \`pnpm install\` first.`);

/** packages/* folders with a package.json, dependencies first (the workspace graph is acyclic). */
function workspacePackages() {
  const dirs = readdirSync(join(repoRoot, "packages"), { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(repoRoot, "packages", e.name, "package.json")))
    .map((e) => `packages/${e.name}`)
    .sort();
  const byName = new Map(dirs.map((dir) => [readJson(join(repoRoot, dir, "package.json")).name, dir]));
  const ordered = [];
  const seen = new Set();
  const visit = (dir) => {
    if (seen.has(dir)) return;
    seen.add(dir);
    const manifest = readJson(join(repoRoot, dir, "package.json"));
    for (const dep of Object.keys(manifest.dependencies ?? {})) {
      const depDir = byName.get(dep);
      if (depDir !== undefined) visit(depDir);
    }
    ordered.push(dir);
  };
  dirs.forEach(visit);
  return ordered;
}

/** Whether a package has vitest test files (the preset's include: test/**\/*.test.ts, src/**\/*.test.ts). */
function hasTests(files, dir) {
  return files.some((f) => (f.startsWith(`${dir}/test/`) || f.startsWith(`${dir}/src/`)) && f.endsWith(".test.ts"));
}

const packages = workspacePackages();
const workspaceNames = new Map(
  [...packages, ...TOOLING_PACKAGES].map((dir) => [readJson(join(repoRoot, dir, "package.json")).name, dir]),
);

// ---- native addon (with CUDA) -----------------------------------------------------------------------------

const kernelsDir = join(repoRoot, "packages", "kernels");
const nativeBuildDir = "build-gpu-bundle";
const addonPath = join(kernelsDir, nativeBuildDir, "Release", "lowbit_kernels.node");
const cudaArchs = process.env.LOWBIT_CUDA_ARCHS || "80-real;86-real;89-real;90";
if (options.skipNative) {
  if (!existsSync(addonPath)) fail(`--skip-native: ${relative(repoRoot, addonPath)} does not exist; build it once without --skip-native.`);
  log(`reusing ${relative(repoRoot, addonPath)}`);
} else {
  log(`building the native addon with CUDA (archs ${cudaArchs}) in packages/kernels/${nativeBuildDir}/`);
  run(process.execPath, ["scripts/build-native.mjs"], "the CUDA build of the native addon", {
    cwd: kernelsDir,
    env: {
      ...process.env,
      LOWBIT_CUDA: "1",
      LOWBIT_CUDA_ARCHS: cudaArchs,
      LOWBIT_BUILD_DIR: nativeBuildDir,
      LOWBIT_BUILD_JOBS: process.env.LOWBIT_BUILD_JOBS || "2",
    },
  });
}
{
  // The addon must be a CUDA build: a CPU-only one would make every "GPU" test silently run on the CPU.
  const probe = capture(process.execPath, [
    "-e",
    `const b = require(${JSON.stringify(addonPath)}); console.log(JSON.stringify({ version: b.version, cuda: b.cudaCompiled }));`,
  ]);
  if (probe === null) fail(`${relative(repoRoot, addonPath)} does not load in this Node.`);
  const info = JSON.parse(probe);
  if (info.cuda !== true) fail(`${relative(repoRoot, addonPath)} was built without CUDA (is nvcc on PATH?).`);
  log(`addon ${info.version}, CUDA compiled in, ${mib(statSync(addonPath).size)}`);
}
// The architectures the addon was really built for (with --skip-native, the build folder's, not the environment's).
const builtArchs =
  /^LOWBIT_CUDA_ARCHS:STRING=(.*)$/m.exec(readFileSync(join(kernelsDir, nativeBuildDir, "CMakeCache.txt"), "utf8"))?.[1] ?? cudaArchs;

// ---- stage ----------------------------------------------------------------------------------------------

// Always inside the repository's git-ignored dist-gpu/, whatever --out says (the folder is wiped first).
const stageRoot = join(repoRoot, "dist-gpu", "stage");
const stage = join(stageRoot, BUNDLE_NAME);
rmSync(stageRoot, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// Root files: the workspace manifest (vite looks for the workspace root), the fixtures and the runner.
for (const rel of ["package.json", "pnpm-workspace.yaml", ...gitFiles("fixtures")]) copyRepoFile(rel, stage);
copyFileSync(join(repoRoot, "tooling", "scripts", "run-gpu-tests.sh"), join(stage, "run-gpu-tests.sh"));
chmodSync(join(stage, "run-gpu-tests.sh"), 0o755);

// Node: the binary this script runs on (the same version the addon was built against).
{
  const nodeBinary = realpathSync(process.execPath);
  mkdirSync(join(stage, "bin"), { recursive: true });
  const dst = join(stage, "bin", "node");
  // --strip-all drops debug info and the static symbol table (about 1.5 MiB of the archive); the dynamic
  // symbols the addon links against (napi_*) stay.
  if (options.strip && capture("strip", ["--strip-all", "-o", dst, nodeBinary]) !== null) {
    log(`node ${process.version} from ${nodeBinary} (stripped: ${mib(statSync(dst).size)})`);
  } else {
    copyFileSync(nodeBinary, dst);
    log(`node ${process.version} from ${nodeBinary} (${mib(statSync(dst).size)})`);
  }
  chmodSync(dst, 0o755);
}

// Workspace packages: their git-visible files minus native sources (the addon ships built).
const testPackages = [];
for (const dir of [...packages, ...TOOLING_PACKAGES]) {
  const files = gitFiles(dir).filter((f) => !f.startsWith(`${dir}/native/`));
  for (const rel of files) copyRepoFile(rel, stage);
  if (packages.includes(dir) && hasTests(files, dir)) testPackages.push(dir);
}
log(`packages: ${packages.join(", ")}; with tests: ${testPackages.join(", ")}`);

// dist/ of every package, built by tsup straight into the stage (the workspace's dist/ stays as it is).
const distFailures = [];
for (const dir of packages) {
  if (!existsSync(join(repoRoot, dir, "tsup.config.ts"))) continue;
  const req = createRequire(join(repoRoot, dir, "package.json"));
  let tsupManifest;
  try {
    tsupManifest = req.resolve("tsup/package.json");
  } catch {
    fail(`${dir} has a tsup.config.ts but tsup is not installed there; run \`pnpm install\`.`);
  }
  const tsupCli = join(dirname(tsupManifest), readJson(tsupManifest).bin.tsup);
  log(`tsup ${dir} -> bundle`);
  const args = [tsupCli, "--out-dir", join(stage, dir, "dist"), "--silent"];
  if (!options.allowDistFailures) {
    run(process.execPath, args, `tsup of ${dir}`, { cwd: join(repoRoot, dir) });
    continue;
  }
  const result = spawnSync(process.execPath, args, { stdio: "inherit", cwd: join(repoRoot, dir) });
  if (result.status !== 0) {
    rmSync(join(stage, dir, "dist"), { recursive: true, force: true });
    distFailures.push(dir);
    console.warn(`[gpu-bundle] WARNING: tsup of ${dir} failed; it ships without dist/ (--allow-dist-failures)`);
  }
}

// The addon, where src/loader.ts (and dist/) look for it: <package>/build/Release.
mkdirSync(join(stage, "packages", "kernels", "build", "Release"), { recursive: true });
copyFileSync(addonPath, join(stage, "packages", "kernels", "build", "Release", "lowbit_kernels.node"));

// Benchmarks: bench/*.ts -> bench/*.js next to them. Relative imports are bundled (so import.meta.url
// stays inside the package and the kernels loader still finds ../build/Release); bare imports stay
// external and resolve at run time through the bundle's node_modules (workspace packages -> dist/).
const benches = [];
{
  const tsupDir = dirname(createRequire(join(repoRoot, "packages", "kernels", "package.json")).resolve("tsup/package.json"));
  const esbuild = createRequire(join(tsupDir, "package.json"))("esbuild");
  for (const dir of packages) {
    const benchDir = join(repoRoot, dir, "bench");
    if (!existsSync(benchDir)) continue;
    for (const name of readdirSync(benchDir).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")).sort()) {
      const outfile = join(stage, dir, "bench", name.replace(/\.ts$/, ".js"));
      esbuild.buildSync({
        entryPoints: [join(benchDir, name)],
        outfile,
        bundle: true,
        packages: "external",
        platform: "node",
        format: "esm",
        target: "node20",
        logLevel: "warning",
        banner: { js: `// ${dir}/bench/${name} prebundled by tooling/scripts/gpu-bundle.mjs` },
      });
      benches.push(`${dir}/bench/${basename(outfile)}`);
    }
  }
  log(`benchmarks: ${benches.join(", ") || "(none)"}`);
}

// ---- node_modules: the run-time closure out of the pnpm layout --------------------------------------------

/** { entry, name } of a real package folder inside node_modules/.pnpm/<entry>/node_modules/<name>. */
function storeLocation(realDir) {
  const rel = relative(pnpmStore, realDir);
  const parts = rel.split(sep);
  if (rel.startsWith("..") || parts.length < 3 || parts[1] !== "node_modules") return null;
  return { entry: parts[0], name: parts.slice(2).join("/") };
}

/** Where a store package lands in the stage. */
function stagedStorePath(entry, name) {
  return join(stage, "node_modules", ".pnpm", entry, "node_modules", ...name.split("/"));
}

const copied = new Map(); // realDir -> { entry, name }
const storeLinks = []; // [fromEntry, depName, realDir]

/** Copies a store package and everything it needs at run time; returns its real folder. */
function addStorePackage(realDir, neededBy) {
  if (copied.has(realDir)) return realDir;
  const location = storeLocation(realDir);
  if (location === null) fail(`${realDir} (needed by ${neededBy}) is not inside node_modules/.pnpm; cannot bundle it.`);
  copied.set(realDir, location);
  cpSync(realDir, stagedStorePath(location.entry, location.name), {
    recursive: true,
    verbatimSymlinks: true,
    // Type declarations, source maps and changelogs are never read at run time.
    filter: (src) => !/\.(d\.[cm]?ts|map|tsbuildinfo)$/.test(src) && !/(^|\/)CHANGELOG[^/]*$/i.test(src),
  });
  const manifest = readJson(join(realDir, "package.json"));
  const peerMeta = manifest.peerDependenciesMeta ?? {};
  const optionalPeer = (d) => peerMeta[d]?.optional === true;
  const wanted = [
    ...Object.keys(manifest.dependencies ?? {}).map((d) => [d, true]),
    ...Object.keys(manifest.optionalDependencies ?? {}).map((d) => [d, false]),
    ...Object.keys(manifest.peerDependencies ?? {}).map((d) => [d, !optionalPeer(d)]),
  ];
  for (const [dep, required] of wanted) {
    if (NEVER_LOADED.has(dep)) continue;
    const link = join(pnpmStore, location.entry, "node_modules", ...dep.split("/"));
    if (!existsSync(link)) {
      if (required) fail(`${manifest.name} needs ${dep}, which is not installed next to it (${relative(repoRoot, link)}).`);
      continue; // an optional dependency for another platform, or an optional peer nobody installed
    }
    const depReal = realpathSync(link);
    if (depReal === realDir) continue;
    storeLinks.push([location.entry, dep, depReal]);
    // An optional peer is linked only when something else brings it in (@vitest/mocker's vite, which vitest
    // needs anyway); on its own it never enters the bundle: pnpm links whatever the workspace happens to
    // have installed (vite's esbuild / tsx / @types/node), and nothing here needs those at run time.
    if (!(dep in (manifest.peerDependencies ?? {}) && optionalPeer(dep))) addStorePackage(depReal, manifest.name);
  }
  return realDir;
}

// One vitest for everyone: the copy tooling/vitest (the preset) links, so config and tests share it.
const vitestReal = realpathSync(join(repoRoot, "tooling", "vitest", "node_modules", "vitest"));

/** Direct links a workspace package needs in its node_modules: name -> absolute target in the stage. */
function packageLinks(dir) {
  const manifest = readJson(join(repoRoot, dir, "package.json"));
  const links = new Map();
  const want = (dep) => {
    const workspaceDir = workspaceNames.get(dep);
    if (workspaceDir !== undefined) {
      links.set(dep, join(stage, workspaceDir));
      return;
    }
    const real = dep === "vitest" ? vitestReal : realpathSync(join(repoRoot, dir, "node_modules", ...dep.split("/")));
    addStorePackage(real, manifest.name);
    const { entry, name } = copied.get(real);
    links.set(dep, stagedStorePath(entry, name));
  };
  for (const dep of Object.keys(manifest.dependencies ?? {})) if (!BUILD_ONLY_DEPENDENCIES.has(dep)) want(dep);
  for (const dep of Object.keys(manifest.peerDependencies ?? {})) want(dep);
  const dev = manifest.devDependencies ?? {};
  // Test-time dev dependencies only: the runner, its preset and the tsconfig base vite reads.
  for (const dep of ["vitest", "@lowbit/vitest-config", "@lowbit/tsconfig"]) if (dep in dev) want(dep);
  return links;
}

for (const dir of [...packages, ...TOOLING_PACKAGES]) {
  for (const [dep, target] of packageLinks(dir)) linkRelative(target, join(stage, dir, "node_modules", ...dep.split("/")));
}
for (const [entry, dep, depReal] of storeLinks) {
  const target = copied.get(depReal);
  if (target === undefined) continue; // an optional peer nothing else needs (see addStorePackage)
  linkRelative(stagedStorePath(target.entry, target.name), join(stage, "node_modules", ".pnpm", entry, "node_modules", ...dep.split("/")));
}
log(`node_modules: ${copied.size} packages, ${mib(dirBytes(join(stage, "node_modules")))}`);

// ---- manifest and archive ---------------------------------------------------------------------------------

{
  const commit = capture("git", ["rev-parse", "HEAD"], { cwd: repoRoot }) ?? "unknown";
  const dirty = capture("git", ["status", "--porcelain"], { cwd: repoRoot }) ?? "";
  const lines = [
    `lowbit GPU test bundle, made ${new Date().toISOString()} by tooling/scripts/gpu-bundle.mjs`,
    `git commit: ${commit}${dirty ? " (with uncommitted changes, listed below)" : ""}`,
    `node: ${process.version} (${process.platform}-${process.arch})`,
    `CUDA architectures: ${builtArchs}`,
    `packages with tests: ${testPackages.join(" ")}`,
    `benchmarks: ${benches.join(" ") || "(none)"}`,
    `dist/ missing (tsup failed, --allow-dist-failures): ${distFailures.join(" ") || "none"}`,
    `node_modules packages: ${[...copied.values()].map((c) => c.entry).sort().join(" ")}`,
    "",
    "Run: ./run-gpu-tests.sh [results-folder]   (see CONTRIBUTING.md in the repository)",
  ];
  if (dirty) lines.push("", "uncommitted changes:", dirty);
  writeFileSync(join(stage, "BUNDLE.txt"), `${lines.join("\n")}\n`);
  // run-gpu-tests.sh reads these to know what to run.
  writeFileSync(join(stage, "test-packages.txt"), `${testPackages.join("\n")}\n`);
}

mkdirSync(dirname(options.out), { recursive: true });
rmSync(options.out, { force: true });
log(`compressing ${mib(dirBytes(stage))} -> ${relative(repoRoot, options.out)}`);
run(
  "tar",
  ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-C", stageRoot, "-cJf", options.out, BUNDLE_NAME],
  "tar",
  { env: { ...process.env, XZ_OPT: process.env.XZ_OPT || "-9 -T2" } },
);
if (!options.keepStage) rmSync(stageRoot, { recursive: true, force: true });
const size = statSync(options.out).size;
log(`wrote ${relative(repoRoot, options.out)}: ${mib(size)}${size > SIZE_GOAL_MIB * (1 << 20) ? ` (over the ${SIZE_GOAL_MIB} MiB goal)` : ""}`);
