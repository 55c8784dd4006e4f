/**
 * During an outage every request fails the same way: the log gets the first, then one line a
 * second with how many requests it stands for, not one line per request (a burst of refused
 * logins once flooded it).
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { outageLog } from '../../src/http/error-handler.js';

describe('the outage log', () => {
  it('logs the first failure, then at most one line a second with the count it stands for, the last ones a second after', async () => {
    const lines: number[] = [];
    const log = outageLog();
    for (let i = 0; i < 5; i++) log((requests) => lines.push(requests));
    expect(lines, 'five failures at once: one line').to.deep.equal([1]);
    // Timers due earlier fire first: the trailing line's (1 s) before this sleep's end.
    await sleep(1100);
    expect(lines, 'the four left out, told a second after the first line').to.deep.equal([1, 4]);
    log((requests) => lines.push(requests));
    expect(lines, 'within a second of that line: not yet').to.deep.equal([1, 4]);
    await sleep(1100);
    expect(lines, 'every failure counted once').to.deep.equal([1, 4, 1]);
    await sleep(1100);
    log((requests) => lines.push(requests));
    expect(lines, 'after a quiet second: at once').to.deep.equal([1, 4, 1, 1]);
  });
});
