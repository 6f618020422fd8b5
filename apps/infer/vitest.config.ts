import { lowbitVitest } from "@lowbit/vitest-config";

// The CLI tests spawn the built dist/cli.js (turbo builds it first, see turbo.json).
export default lowbitVitest();
