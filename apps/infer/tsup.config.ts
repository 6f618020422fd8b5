import { lowbitPreset } from "@lowbit/build-config";

// A Node CLI: src/cli.ts starts with a shebang, which esbuild keeps at the top of dist/cli.js.
export default lowbitPreset({ entry: ["src/cli.ts"], platform: "node" });
