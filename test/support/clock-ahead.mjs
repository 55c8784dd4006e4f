/**
 * Loaded with `--import` (or NODE_OPTIONS) into a process under test: its wall clock runs
 * CLOCK_AHEAD_MS ahead (negative: behind), as on a machine whose clock is off. The monotonic
 * clock is left alone, as an off clock leaves it. Plain JavaScript: NODE_OPTIONS loads it before
 * the TypeScript loader.
 */
import process from 'node:process';

const ahead = Number(process.env.CLOCK_AHEAD_MS ?? 0);
const realNow = Date.now.bind(Date);
Date.now = () => realNow() + ahead;
