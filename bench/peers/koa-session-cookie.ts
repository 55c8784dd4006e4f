/** koa-session in its default cookie mode: the session JSON, base64, in a signed cookie (koa.sess + koa.sess.sig). */
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import session from 'koa-session';
import { HOST, listening, MAX_AGE_MS, PORT, SECRET } from './common.js';
import { sessionRoutes } from './koa-routes.js';

const app = new Koa();
app.keys = [SECRET];
app.use(bodyParser());
app.use(session({ maxAge: MAX_AGE_MS, httpOnly: true, sameSite: 'lax' }, app));
const router = sessionRoutes();
app.use(router.routes());
app.listen(PORT, HOST, listening('koa-session-cookie'));
