// Build: the shared lowbit tsup preset (ESM + declarations from src/index.ts).
import { lowbitPreset } from "@lowbit/build-config";

export default lowbitPreset();
