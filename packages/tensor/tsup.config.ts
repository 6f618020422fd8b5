import { lowbitPreset } from "@lowbit/build-config";

export default lowbitPreset();
