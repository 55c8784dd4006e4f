/**
 * The override's poll (flags/override.ts): one at a time. A poll the database holds (a lock on
 * flag_overrides) must not be joined by another every interval, each holding a pooled
 * connection, until the pool is gone.
 */
import { expect } from 'chai';
import type { Models } from '../../src/db/models.js';
import { FlagOverride } from '../../src/flags/override.js';

describe('the flag override poll', function () {
  it('sends no new poll while one is still waiting on the database', async function () {
    let reads = 0;
    let release: (() => void) | undefined;
    const models = {
      FlagOverride: {
        findAll: () => {
          reads++;
          // The first read (start-up) answers; the next is held, as by a lock on the table.
          if (reads === 1) return Promise.resolve([]);
          return new Promise((resolve) => (release = () => resolve([])));
        },
      },
    } as unknown as Models;
    const override = new FlagOverride(models, { syncIntervalMs: 10 });
    await override.start();
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(reads, 'reads sent while the second one waited').to.equal(2);
    release?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(reads, 'polls again once the held one has answered').to.be.greaterThan(2);
    release?.();
    await override.stop();
  });
});
