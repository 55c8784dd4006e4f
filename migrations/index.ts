/** Every migration, in order. Listed by hand so the same list runs from TypeScript and from dist/. */
import * as initial from './001-initial.js';
import * as revocationsAndFlags from './002-revocations-and-flags.js';
import * as settings from './003-settings.js';

export const migrations = [
  { name: '001-initial', ...initial },
  { name: '002-revocations-and-flags', ...revocationsAndFlags },
  { name: '003-settings', ...settings },
];
