import { lowbitPreset } from "@lowbit/build-config";

// Reads files with node:fs (safetensors headers, configs, tokenizers), so it is built for Node.
export default lowbitPreset({ platform: "node" });
