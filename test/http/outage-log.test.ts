/**
 * During an outage every request fails the same way: the log gets the first, then one line a
 * second with how many requests it stands for, not one line per request (a burst of refused
 * logins once flooded it).
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { outageLog } from '../../src/http/error-handler.js';

describe('the outage log', () => {
  it('logs the first failure, then at most one line a second with the count it stands for', async () => {
    const lines: number[] = [];
    const log = outageLog();
    for (let i = 0; i < 5; i++) log((requests) => lines.push(requests));
    expect(lines, 'five failures at once: one line').to.deep.equal([1]);
    await sleep(1100);
    log((requests) => lines.push(requests));
    expect(lines, 'the next line counts the four unlogged and itself').to.deep.equal([1, 5]);
  });
});
