/**
 * Security headers (helmet) with a Content-Security-Policy that allows only same-origin
 * scripts and styles — no 'unsafe-inline'.
 *
 * helmet decides the headers from its options alone (no nonces, nothing per request), so it
 * runs once, at start, and every response gets the same precomputed set: running helmet per
 * request cost a dozen header decisions and a promise for each response (docs/performance.md).
 *
 * JSON answers (the API and the operations routes) get the set OWASP's REST Security cheat
 * sheet gives for APIs instead: nothing in them is rendered, so the page-oriented headers
 * (X-XSS-Protection, X-Download-Options, Origin-Agent-Cluster…) only add bytes to every answer,
 * and `default-src 'none'` is the tighter policy for anything a browser might render anyway.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';
import type { Context, Next } from 'koa';

const options = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", 'data:'],
      connectSrc: ["'self'"],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
      baseUri: ["'none'"],
      objectSrc: ["'none'"],
    },
  },
  crossOriginEmbedderPolicy: false,
  // The legacy twin of frame-ancestors 'none' above; helmet's default (SAMEORIGIN) would contradict it.
  xFrameOptions: { action: 'deny' },
} as const;

/** The headers helmet sets with `options`, captured from one run against a recording response. */
function helmetHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: unknown) {
      headers[name] = String(value);
    },
    removeHeader(name: string) {
      delete headers[name];
    },
  };
  let ran = false;
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, () => {
    ran = true;
  });
  // helmet's middleware is synchronous; if a later version were not, fail at start, not silently.
  if (!ran) throw new Error('helmet did not finish synchronously: security headers cannot be precomputed');
  return headers;
}

/** For JSON answers: OWASP REST Security cheat sheet, "Security headers". */
export function apiHeaders(): Record<string, string> {
  const page = helmetHeaders();
  return {
    'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
    'Strict-Transport-Security': page['Strict-Transport-Security']!,
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Resource-Policy': 'same-origin',
    // Every JSON answer is someone's data (platforms, an admin's view of a user's sessions…):
    // never kept by the browser, whose Back button would show it after a logout.
    'Cache-Control': 'no-store',
  };
}

// Routes match in any letter case (`/API/platforms`): so does this.
const API_PATH = /^\/api\//i;
const isApi = (path: string) => API_PATH.test(path) || path === '/healthz' || path === '/readyz' || path === '/metrics';

export function securityHeaders() {
  const forPages = Object.entries(helmetHeaders());
  const forApi = Object.entries(apiHeaders());
  // Not async, as csrf.ts: headers set before next(), nothing after.
  return function setSecurityHeaders(ctx: Context, next: Next) {
    const res = ctx.res;
    for (const [name, value] of isApi(ctx.path) ? forApi : forPages) res.setHeader(name, value);
    return next();
  };
}
