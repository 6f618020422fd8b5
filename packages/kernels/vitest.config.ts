import { lowbitVitest } from "@lowbit/vitest-config";

export default lowbitVitest();
