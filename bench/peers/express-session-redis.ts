/**
 * express-session with connect-redis, set up as connect-redis's readme says: a node-redis
 * client, `resave: false`, `saveUninitialized: false`. Express 5 with express.json().
 */
import { RedisStore } from 'connect-redis';
import express from 'express';
import session from 'express-session';
import { createClient } from 'redis';
import { HOST, KEY_PREFIX, listening, MAX_AGE_MS, PORT, preferencesOf, REDIS_URL, SECRET, sessionContent } from './common.js';

const client = createClient({ url: REDIS_URL });
client.on('error', (err: unknown) => console.error('redis error', err));
await client.connect();

const app = express();
app.use(express.json());
app.use(
  session({
    store: new RedisStore({ client, prefix: KEY_PREFIX }),
    resave: false,
    saveUninitialized: false,
    secret: SECRET,
    cookie: { httpOnly: true, sameSite: 'lax', maxAge: MAX_AGE_MS },
  }),
);

type Sess = { user?: unknown; csrfToken?: string; platformId?: number | null; preferences?: Record<string, unknown> };
const sess = (req: express.Request) => (req as express.Request & { session: Sess }).session;

app.post('/login', (req, res) => {
  const content = sessionContent(req.body);
  if (!content) {
    res.status(400).end();
    return;
  }
  Object.assign(sess(req), content);
  res.json({ csrfToken: content.csrfToken });
});
app.get('/read', (req, res) => {
  const s = sess(req);
  if (!s.user) {
    res.status(401).json({ authenticated: false });
    return;
  }
  res.json({ authenticated: true, user: s.user });
});
app.post('/write', (req, res) => {
  const s = sess(req);
  const preferences = preferencesOf(req.body);
  if (!s.user || !preferences) {
    res.status(s.user ? 400 : 401).end();
    return;
  }
  s.preferences = { ...(s.preferences ?? {}), ...preferences };
  res.json({ preferences: s.preferences });
});
app.get('/anon', (_req, res) => {
  res.json({ status: 'ok' });
});
app.listen(PORT, HOST, listening('express-session-redis'));
