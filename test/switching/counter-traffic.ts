/**
 * Users changing a counter while a backend fails under them: each makes a stream of requests,
 * and every read checks the user, the platform and that no answered change was lost.
 */
import type { Client } from '../support/http-client.js';

export interface TrafficUser {
  client: Client;
  userId: number;
  /** The last counter value a PATCH was answered 200 for (or sent, for the one in flight). */
  counter: number;
  /** The active platform every read must show, if the user has one. */
  platformId?: number;
}

type SessionBody = { user?: { id: number }; platform?: { id: number }; preferences?: { counter?: number } };

/**
 * Each user makes `rounds` sequential requests (a write every third), all users at once. What
 * is wrong is pushed to `failures`. A write in flight when the backend died (answered 503, or
 * not answered) may be missing: at most one per user, remembered in `lagged`.
 */
export async function counterTraffic(users: TrafficUser[], rounds: number, failures: string[], lagged: Set<number>): Promise<void> {
  await Promise.all(
    users.map(async (u) => {
      for (let i = 0; i < rounds; i++) {
        if (i % 3 === 0) {
          u.counter++;
          const res = await u.client.patch('/api/session', { preferences: { counter: u.counter } });
          if (res.status !== 200) failures.push(`PATCH ${res.status} ${res.text}`);
          continue;
        }
        const res = await u.client.get('/api/session');
        const body = res.json as SessionBody;
        if (res.status !== 200) failures.push(`GET ${res.status} ${res.text}`);
        else if (body.user?.id !== u.userId || (u.platformId !== undefined && body.platform?.id !== u.platformId)) failures.push(`data changed: ${res.text}`);
        else if (body.preferences?.counter !== u.counter) {
          if (u.counter - (body.preferences?.counter ?? 0) === 1 && !lagged.has(u.userId)) {
            lagged.add(u.userId);
            u.counter = body.preferences?.counter ?? 0;
          } else failures.push(`data lost: ${res.text}`);
        }
      }
    }),
  );
}
