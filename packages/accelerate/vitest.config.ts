// Tests: the shared lowbit vitest preset (workspace packages read from source, forked workers).
import { lowbitVitest } from "@lowbit/vitest-config";

export default lowbitVitest();
