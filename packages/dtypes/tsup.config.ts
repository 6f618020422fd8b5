import { lowbitPreset } from "@lowbit/build-config";

// Pure TS with no Node APIs: built for any platform (browsers included).
export default lowbitPreset({ platform: "neutral" });
